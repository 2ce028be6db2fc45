"""fiftyone_faseg.metrics on hand-computed examples (pure numpy, no FiftyOne)."""

import subprocess
import sys

import numpy as np
import pytest

from fiftyone_faseg import metrics as fm

# One 2x3 image, 3 classes, one void pixel (bottom right):
#   gt   = 0 0 1      pred = 0 1 1
#          1 2 255           1 1 0
# Counted (gt, pred) pairs: (0,0) (0,1) (1,1) (1,1) (2,1); the void pixel is not.
GT = np.array([[0, 0, 1], [1, 2, 255]], dtype=np.uint8)
PRED = np.array([[0, 1, 1], [1, 1, 0]], dtype=np.uint8)
CONF = np.array(
    [
        [1, 1, 0],  # background: 1 right, 1 called "1"
        [0, 2, 0],  # class 1: both right
        [0, 1, 0],  # class 2: its only pixel called "1"
    ]
)
# IoU_0 = 1 / (2 + 1 - 1) = 1/2; IoU_1 = 2 / (2 + 4 - 2) = 1/2; IoU_2 = 0 / (1 + 0 - 0) = 0
IOU = [0.5, 0.5, 0.0]
MIOU = 1.0 / 3.0


def test_confusion_matrix_by_hand():
    conf = fm.confusion_matrix(GT, PRED, 3)
    np.testing.assert_array_equal(conf, CONF)
    np.testing.assert_allclose(fm.iou_per_class(conf), IOU)
    assert fm.mean_iou(conf) == pytest.approx(MIOU)


def test_void_pixels_are_ignored_whatever_is_predicted_there():
    for value in (0, 1, 2):
        pred = PRED.copy()
        pred[1, 2] = value
        np.testing.assert_array_equal(fm.confusion_matrix(GT, pred, 3), CONF)

    # with another ignore value, 255 is simply out of range and still not counted
    np.testing.assert_array_equal(fm.confusion_matrix(GT, PRED, 3, ignore_index=None), CONF)


def test_classes_absent_from_both_sides_are_left_out_of_the_mean():
    conf = fm.confusion_matrix(GT, PRED, 5)  # classes 3 and 4 never appear
    iou = fm.iou_per_class(conf)
    assert np.isnan(iou[3]) and np.isnan(iou[4])
    assert fm.mean_iou(conf) == pytest.approx(MIOU)

    # a class only predicted (empty ground truth, non-empty union) counts as 0
    pred = PRED.copy()
    pred[0, 0] = 3
    # IoU_0 = 0 / (2 + 0 - 0) = 0, IoU_1 = 1/2, IoU_2 = 0, IoU_3 = 0 / (0 + 1) = 0
    assert fm.mean_iou(fm.confusion_matrix(GT, pred, 5)) == pytest.approx(0.5 / 4)
    # ... unless the mean is restricted to the first classes (ground truth classes)
    assert fm.mean_iou(fm.confusion_matrix(GT, pred, 5), num_classes=3) == pytest.approx(
        0.5 / 3
    )


def test_prediction_is_resized_to_ground_truth_with_nearest():
    gt = np.array(
        [
            [0, 0, 1, 1],
            [0, 0, 1, 1],
            [1, 1, 2, 2],
            [1, 1, 2, 0],
        ]
    )
    pred = np.array([[0, 1], [1, 2]])  # each value covers a 2x2 block of gt
    conf = fm.confusion_matrix(gt, pred, 3)
    # background: 5 pixels, 4 right + 1 called "2" (bottom right); class 1: 8 right;
    # class 2: 3 right
    np.testing.assert_array_equal(conf, [[4, 0, 1], [0, 8, 0], [0, 0, 3]])
    # IoU_0 = 4/5, IoU_1 = 8/8, IoU_2 = 3 / (3 + 4 - 3) = 3/4
    assert fm.mean_iou(conf) == pytest.approx((0.8 + 1.0 + 0.75) / 3)


def test_resize_nearest_convention():
    a = np.arange(9).reshape(3, 3)
    # output index i samples the input pixel under its centre, (i + 0.5) * in / out (PIL's
    # nearest, as the pipeline resizes its masks): 3 -> 2 keeps rows/cols 0 and 2
    np.testing.assert_array_equal(fm.resize_nearest(a, (2, 2)), [[0, 2], [6, 8]])
    # 2 -> 3 samples 0, 1, 1
    b = np.array([[1, 2], [3, 4]], dtype=np.uint8)
    out = fm.resize_nearest(b, (3, 3))
    np.testing.assert_array_equal(out, [[1, 2, 2], [3, 4, 4], [3, 4, 4]])
    assert out.dtype == np.uint8
    assert fm.resize_nearest(b, (2, 2)) is b
    with pytest.raises(ValueError, match="RGB"):
        fm.resize_nearest(np.zeros((2, 2, 3)), (4, 4))


def test_dataset_miou_sums_pixels_over_images():
    # image 1: the example above (mIoU 1/3); image 2: all right, classes 0 and 1 only
    gt2 = np.array([[0, 1], [1, 1]])
    conf = fm.confusion_matrix(GT, PRED, 3) + fm.confusion_matrix(gt2, gt2, 3)
    np.testing.assert_array_equal(conf, CONF + [[1, 0, 0], [0, 3, 0], [0, 0, 0]])
    # summed: IoU_0 = 2 / (3 + 2 - 2) = 2/3, IoU_1 = 5 / (5 + 7 - 5) = 5/7, IoU_2 = 0
    assert fm.mean_iou(conf) == pytest.approx((2 / 3 + 5 / 7 + 0) / 3)
    # not the mean of the per-image mIoUs (1/3 and 1)
    assert fm.mean_iou(conf) != pytest.approx((MIOU + 1.0) / 2)


def test_empty_and_invalid_inputs():
    assert np.isnan(fm.mean_iou(np.zeros((3, 3))))
    assert np.isnan(fm.mean_iou(fm.confusion_matrix(np.full((2, 2), 255), PRED[:, :2], 3)))
    with pytest.raises(ValueError, match=r"Predicted values \[7\]"):
        fm.confusion_matrix(GT, np.full_like(PRED, 7), 3)


def test_remap():
    mask = np.array([[0, 1, 2], [3, 255, 1]], dtype=np.uint8)
    out = fm.remap(mask, {0: 0, 1: 2, 2: 1}, default=-1)
    np.testing.assert_array_equal(out, [[0, 2, 1], [-1, -1, 2]])


def test_metrics_import_needs_neither_fiftyone_nor_torch():
    code = (
        "import sys, fiftyone_faseg.metrics; "
        "print(sorted(m for m in ('fiftyone', 'torch') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"

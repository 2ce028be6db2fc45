"""mIoU evaluation inside FiftyOne: SDK, operators, metric, on the real embedded MongoDB.

Every number is checked against an independent count written here with plain numpy
(no fiftyone_faseg.metrics): ground truth and prediction ids differ but share names.
"""


import numpy as np
import pytest
from PIL import Image

import fiftyone as fo
import fiftyone.operators as foo
from fiftyone.operators.delegated import DelegatedOperationService

from conftest import SHARED

from fiftyone_faseg.constants import operator_uri
from fiftyone_faseg.evaluation import (
    MIOU_METRIC_URI,
    FASegResults,
    evaluate_faseg,
)

EVALUATE_OPERATOR_URI = operator_uri("evaluate_faseg")

GT_TARGETS = {1: "cat", 2: "dog"}
PRED_TARGETS = {1: "Dog", 2: " cat ", 3: "zebra"}
CLASSES = ["background", "cat", "dog", "zebra"]
# prediction pixel value -> index in CLASSES (what the evaluation must find by name)
PRED_TO_CLASS = {0: 0, 1: 2, 2: 1, 3: 3}
# the sample left without a prediction is skipped with FiftyOne's usual warning
pytestmark = pytest.mark.filterwarnings("ignore:Skipping sample with missing prediction")
VOC_SAMPLE = SHARED / "data" / "voc-sample"
VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car",
    "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
    "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]  # fmt: skip


# -- the independent count ------------------------------------------------------------


def _nearest(mask, shape):
    """PIL's own nearest resize (the rule FA-Seg uses everywhere), as an independent oracle."""
    h, w = shape
    return np.asarray(Image.fromarray(mask.astype(np.uint8)).resize((w, h), Image.NEAREST))


def _count(gt, pred, pred_to_class, num_classes, gt_to_class=None):
    """Confusion matrix by an explicit pixel loop over (gt class, pred class)."""
    pred = _nearest(pred, gt.shape)
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    for g, p in zip(gt.ravel().tolist(), pred.ravel().tolist()):
        if g == 255:
            continue
        gi = g if gt_to_class is None else gt_to_class[g]
        conf[gi, pred_to_class[p]] += 1
    return conf


def _miou(conf, num_gt_classes):
    ious = []
    for c in range(num_gt_classes):
        tp = conf[c, c]
        union = conf[c, :].sum() + conf[:, c].sum() - tp
        if union > 0:
            ious.append(tp / union)
    return float(np.mean(ious)) if ious else None


def _class_entries(conf, classes, num_gt_classes):
    """{class: (IoU, gt pixels, pred pixels, tp pixels, in mean)} of the classes present."""
    out = {}
    for c in range(len(conf)):
        gt_px, pred_px, tp = int(conf[c, :].sum()), int(conf[:, c].sum()), int(conf[c, c])
        if gt_px + pred_px - tp > 0:
            out[classes[c]] = (pytest.approx(tp / (gt_px + pred_px - tp)), gt_px, pred_px, tp, c < num_gt_classes)
    return out


def _stored_entries(classifications):
    return {
        c.label: (c.confidence, c.gt_pixels, c.pred_pixels, c.tp_pixels, c.in_mean)
        for c in classifications.classifications
    }


def _expected_overlay(gt_class, pred_class, num_classes):
    """The error overlay by a table over every (gt class, pred class) pair; -1 = ignored."""
    table = np.zeros((num_classes, num_classes), np.uint8)
    for g in range(num_classes):
        for p in range(num_classes):
            if g == 0:
                table[g, p] = 0 if p == 0 else 4  # background: fine, or a false alarm
            elif p == 0:
                table[g, p] = 3  # missed
            else:
                table[g, p] = 1 if g == p else 2  # correct, or the wrong class
    out = table[np.maximum(gt_class, 0), pred_class]
    out[gt_class < 0] = 0
    return out


# -- datasets -------------------------------------------------------------------------


def _masks(seed):
    """(gt, pred) pairs: GT uses GT_TARGETS ids (+255 void), pred uses PRED_TARGETS."""
    rng = np.random.default_rng(seed)
    pairs = []
    for k in range(5):
        gt = np.zeros((24, 32), dtype=np.uint8)
        gt[4:14, 3:15] = 1  # cat
        gt[10:22, 16 + k : 30] = 2  # dog
        gt[0, :] = 255  # void border
        pred = np.zeros_like(gt)
        pred[gt == 1] = 2  # cat is 2 in the prediction
        pred[gt == 2] = 1  # dog is 1 in the prediction
        noise = rng.integers(0, 4, size=gt.shape).astype(np.uint8)
        flip = rng.random(gt.shape) < 0.1 * (k + 1)
        pred[flip] = noise[flip]  # some pixels become another class, zebra included
        if k == 3:
            pred = pred[::2, ::2].copy()  # half size: resized to the GT with nearest
        pairs.append((gt, pred))
    return pairs


def _make_dataset(tmp_path, name, seed=0):
    ds = fo.Dataset(name)
    pairs = _masks(seed)
    samples = []
    for k, (gt, pred) in enumerate(pairs):
        img = tmp_path / ("%s_%d.png" % (name, k))
        Image.fromarray(np.zeros(gt.shape + (3,), np.uint8)).save(img)
        sample = fo.Sample(filepath=str(img))
        if k % 2:  # masks on disk
            gt_path = tmp_path / ("%s_%d_gt.png" % (name, k))
            pred_path = tmp_path / ("%s_%d_pred.png" % (name, k))
            Image.fromarray(gt).save(gt_path)
            Image.fromarray(pred).save(pred_path)
            sample["ground_truth"] = fo.Segmentation(mask_path=str(gt_path))
            sample["faseg"] = fo.Segmentation(mask_path=str(pred_path))
        else:  # masks in the database
            sample["ground_truth"] = fo.Segmentation(mask=gt)
            sample["faseg"] = fo.Segmentation(mask=pred)
        samples.append(sample)

    # one sample without a prediction: skipped, no per-sample mIoU
    img = tmp_path / ("%s_missing.png" % name)
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(img)
    samples.append(
        fo.Sample(filepath=str(img), ground_truth=fo.Segmentation(mask=pairs[0][0]))
    )
    ds.add_samples(samples)
    ds.mask_targets = {"ground_truth": GT_TARGETS, "faseg": PRED_TARGETS}
    ds.save()
    return ds, pairs


def _expected(pairs):
    per_sample = [_count(gt, pred, PRED_TO_CLASS, len(CLASSES)) for gt, pred in pairs]
    total = sum(per_sample)
    return total, [_miou(c, 3) for c in per_sample]


@pytest.fixture(scope="module")
def plugin_ready():
    # conftest points FIFTYONE_PLUGINS_DIR at a folder linking this repository
    for uri in (EVALUATE_OPERATOR_URI, MIOU_METRIC_URI):
        assert foo.get_operator(uri).uri == uri


@pytest.fixture()
def dataset(tmp_path, request):
    ds, pairs = _make_dataset(tmp_path, "faseg-eval-" + request.node.name)
    yield ds, pairs
    ds.delete()


def _check_run(ds, pairs, eval_key):
    total, per_sample = _expected(pairs)
    n = 3  # ground truth classes in the mean: background, cat, dog (not zebra)
    expected_miou = _miou(total, n)

    # FiftyOne's own run: the confusion matrix of the App's panel
    assert eval_key in ds.list_evaluations()
    info = ds.get_evaluation_info(eval_key)
    assert info.config.type == "segmentation" and info.config.method == "faseg"
    results = ds.load_evaluation_results(eval_key)
    assert isinstance(results, FASegResults)
    assert list(results.classes) == CLASSES
    np.testing.assert_array_equal(results.pixel_confusion_matrix, total)
    assert results.pixel_confusion_matrix.sum() == sum(
        (gt != 255).sum() for gt, _ in pairs
    )

    # the custom metric stored with the run
    stored = results.custom_metrics[MIOU_METRIC_URI]
    assert stored["key"] == "miou" and stored["lower_is_better"] is False
    assert stored["value"] == pytest.approx(100 * expected_miou)  # in percent, as people read it
    assert results.metrics()["miou"] == pytest.approx(100 * expected_miou)

    # results API
    assert results.miou == pytest.approx(expected_miou)
    for c in range(n):
        tp = total[c, c]
        iou = tp / (total[c].sum() + total[:, c].sum() - tp)
        assert results.class_iou[CLASSES[c]] == pytest.approx(iou)
    assert set(results.class_iou) == {"background", "cat", "dog"}
    report = results.iou_report()
    assert report["zebra"]["in_mean"] is False and report["zebra"]["gt_pixels"] == 0
    assert report["zebra"]["pred_pixels"] == total[:, 3].sum() > 0
    assert "| **mIoU** | **%.1f** |" % (100 * expected_miou) in results.markdown()

    # per-sample field, in sample order; the sample without prediction has none
    values = ds.values("%s_miou" % eval_key)
    assert values[-1] is None
    np.testing.assert_allclose(values[:-1], 100 * np.asarray(per_sample))  # in percent

    # saved view of the worst samples, worst first
    worst = ds.load_saved_view("%s_worst" % eval_key)
    ids = ds.values("id")
    order = np.argsort(per_sample, kind="stable")
    assert worst.values("id") == [ids[i] for i in order]
    np.testing.assert_allclose(worst.values("%s_miou" % eval_key), 100 * np.sort(per_sample))
    return results


def test_evaluate_faseg_sdk(dataset, plugin_ready):
    ds, pairs = dataset
    with pytest.warns(UserWarning, match="1 samples without a .faseg. mask"):
        results = evaluate_faseg(ds, "faseg", gt_field="ground_truth", eval_key="ev")
    _check_run(ds, pairs, "ev")
    np.testing.assert_array_equal(results.confusion, _expected(pairs)[0])

    # FiftyOne's own per-sample fields are there too
    assert ds.has_sample_field("ev_accuracy")

    # rename and delete carry the mIoU field and the saved view along
    ds.rename_evaluation("ev", "ev2")
    assert ds.has_sample_field("ev2_miou") and not ds.has_sample_field("ev_miou")
    assert ds.list_saved_views() == ["ev2_worst"]
    assert len(ds.load_saved_view("ev2_worst")) == len(pairs)
    ds.delete_evaluation("ev2")
    assert not ds.has_sample_field("ev2_miou")
    assert ds.list_saved_views() == []


def test_view_and_vocabulary(dataset, plugin_ready):
    ds, pairs = dataset

    class Vocabulary:
        def canonical(self, name):
            return {"puppy": "dog", "kitty": "cat"}.get(name.strip().lower())

    ds.mask_targets["faseg"] = {1: "puppy", 2: "Kitty", 3: "zebra"}
    ds.save()
    view = ds.limit(3)
    results = evaluate_faseg(view, "faseg", eval_key="voc", vocabulary=Vocabulary())
    total = sum(_count(g, p, PRED_TO_CLASS, 4) for g, p in pairs[:3])
    np.testing.assert_array_equal(results.confusion, total)
    assert results.miou == pytest.approx(_miou(total, 3))
    assert ds.count("voc_miou") == 3
    assert len(ds.load_saved_view("voc_worst")) == 3

    # without the vocabulary, "puppy"/"Kitty" match nothing: they are wrong everywhere
    results = evaluate_faseg(view, "faseg", eval_key=None)
    assert list(results.classes) == ["background", "cat", "dog", "puppy", "Kitty", "zebra"]
    assert results.class_iou["cat"] == 0 and results.class_iou["dog"] == 0


def test_errors_name_the_problem(dataset):
    ds, _ = dataset
    ds.add_sample_field("score", fo.FloatField)
    with pytest.raises(ValueError, match="field 'score' is not a Segmentation field of"):
        evaluate_faseg(ds, "score")
    with pytest.raises(ValueError, match="field 'nope' is not a Segmentation field"):
        evaluate_faseg(ds, "faseg", gt_field="nope")

    ds.mask_targets = {"ground_truth": GT_TARGETS}
    ds.save()
    with pytest.raises(ValueError, match=r"no mask_targets for 'faseg': .*mask_targets\['faseg'\]"):
        evaluate_faseg(ds, "faseg")

    ds.mask_targets = {"ground_truth": {1: "cat", 2: "Cat"}, "faseg": PRED_TARGETS}
    ds.save()
    with pytest.raises(ValueError, match="same name"):
        evaluate_faseg(ds, "faseg")


def test_operator_immediate_and_delegated(dataset, plugin_ready):
    ds, pairs = dataset
    params = dict(pred_field="faseg", gt_field="ground_truth", eval_key="op")
    result = foo.execute_operator(
        EVALUATE_OPERATOR_URI, ctx=dict(dataset=ds, view=ds.view(), params=params)
    )
    result.raise_exceptions()
    expected_miou = _miou(_expected(pairs)[0], 3)
    assert result.result["miou_value"] == pytest.approx(expected_miou)
    assert result.result["miou"] == "%.1f %%" % (100 * expected_miou)
    assert result.result["worst_view"] == "op_worst"
    _check_run(ds, pairs, "op")

    params = dict(params, eval_key="queued")
    foo.execute_operator(
        EVALUATE_OPERATOR_URI,
        ctx=dict(dataset=ds, view=ds.view(), params=params),
        request_delegation=True,
    )
    assert "queued" not in ds.list_evaluations()
    DelegatedOperationService().execute_queued_operations(
        dataset_name=ds.name
    )
    ds.reload()
    _check_run(ds, pairs, "queued")

    # the SDK path through the operator's __call__ (what the App runs)
    op = foo.get_operator(EVALUATE_OPERATOR_URI)
    op(ds.limit(2), "faseg", gt_field="ground_truth", eval_key="called").raise_exceptions()
    assert ds.count("called_miou") == 2


@pytest.mark.skipif(not VOC_SAMPLE.is_dir(), reason="../shared/data/voc-sample is absent")
def test_voc_sample_perturbed(tmp_path, plugin_ready):
    names = sorted(p.stem for p in (VOC_SAMPLE / "SegmentationClass").glob("*.png"))
    assert len(names) == 14

    # the prediction numbers VOC's classes in reverse and capitalizes their names
    pred_id = {c: (21 - c) % 21 for c in range(21)}  # 0 stays background
    pred_targets = {pred_id[c]: VOC_CLASSES[c].upper() for c in range(1, 21)}
    rng = np.random.default_rng(0)

    ds = fo.Dataset("faseg-voc-sample")
    samples, pairs = [], []
    for k, name in enumerate(names):
        gt = np.array(Image.open(VOC_SAMPLE / "SegmentationClass" / (name + ".png")))
        assert gt.ndim == 2 and set(np.unique(gt)) <= set(range(21)) | {255}
        # GT as a grayscale PNG (FiftyOne would read the palette PNG as RGB)
        gt_path = tmp_path / (name + "_gt.png")
        Image.fromarray(gt).save(gt_path)

        pred = np.roll(gt, shift=(k % 5) * 3, axis=1)  # shifted regions
        pred[pred == 255] = 0  # a model predicts no void
        if k % 3 == 0:
            pred[pred == 15] = 12  # "person" called "dog"
        pred[rng.random(pred.shape) < 0.02] = 7  # speckles of "car"
        pred_mask = np.vectorize(pred_id.get)(pred).astype(np.uint8)
        if k % 4 == 1:
            pred_mask = pred_mask[::2, ::2].copy()
        pairs.append((gt, pred_mask))

        sample = fo.Sample(filepath=str(VOC_SAMPLE / "JPEGImages" / (name + ".jpg")))
        sample["ground_truth"] = fo.Segmentation(mask_path=str(gt_path))
        sample["faseg"] = fo.Segmentation(mask=pred_mask)
        samples.append(sample)

    ds.add_samples(samples)
    ds.mask_targets = {
        "ground_truth": dict(enumerate(VOC_CLASSES)),
        "faseg": pred_targets,
    }
    ds.save()

    try:
        results = evaluate_faseg(ds, "faseg", eval_key="voc")
        to_class = {v: c for c, v in pred_id.items()}
        total = sum(_count(g, p, to_class, 21) for g, p in pairs)
        np.testing.assert_array_equal(results.confusion, total)
        assert list(results.classes) == VOC_CLASSES
        expected = _miou(total, 21)
        assert 0.2 < expected < 0.95
        assert results.miou == pytest.approx(expected)
        stored = ds.load_evaluation_results("voc").custom_metrics[MIOU_METRIC_URI]
        assert stored["value"] == pytest.approx(100 * expected)
        per_sample = [_count(g, p, to_class, 21) for g, p in pairs]
        np.testing.assert_allclose(ds.values("voc_miou"), [100 * _miou(c, 21) for c in per_sample])

        # per-class IoU per sample and the error overlay, against the independent counts
        for sample, conf, (gt, pred) in zip(ds.iter_samples(), per_sample, pairs):
            expected = _class_entries(conf, VOC_CLASSES, 21)
            assert _stored_entries(sample.voc_classes) == expected
            gt_class = np.where(gt == 255, -1, gt.astype(np.int64))  # VOC's GT values are the class indices
            pred_class = np.vectorize(to_class.get)(_nearest(pred, gt.shape))
            overlay = _expected_overlay(gt_class, pred_class, 21)
            np.testing.assert_array_equal(sample.voc_errors.get_mask(), overlay)
            for value, name in ((1, "correct"), (2, "wrong_class"), (3, "missed"), (4, "false_alarm")):
                assert sample.voc_errors[name] == int((overlay == value).sum())
        assert ds.mask_targets["voc_errors"] == {1: "correct", 2: "wrong class", 3: "missed", 4: "false alarm"}
    finally:
        ds.delete()


def test_match_classes_background_and_unnamed_values(tmp_path):
    from fiftyone_faseg.evaluation import match_classes

    m = match_classes({0: "void?", 1: "cat", 255: "ignore"}, {5: "Background", 2: "CAT"})
    assert m["classes"] == ["void?", "cat"] and m["num_gt_classes"] == 2
    assert m["gt_values"] == [[0, 0], [1, 1]]  # 255 is never a class
    assert m["pred_values"] == [[0, 0], [2, 1], [5, 0]]  # "Background" is class 0

    # a predicted value with no name: its pixels count against the GT as "(unnamed)"
    ds = fo.Dataset()
    try:
        gt = np.array([[0, 1], [1, 1]], dtype=np.uint8)
        pred = np.array([[9, 1], [9, 0]], dtype=np.uint8)
        ds.add_sample(
            fo.Sample(
                filepath=str(tmp_path / "a.png"),
                ground_truth=fo.Segmentation(mask=gt),
                faseg=fo.Segmentation(mask=pred),
            )
        )
        ds.mask_targets = {"ground_truth": {1: "cat"}, "faseg": {1: "cat"}}
        ds.save()
        results = evaluate_faseg(ds, "faseg", eval_key=None)
        assert list(results.classes) == ["background", "cat", "(unnamed)"]
        np.testing.assert_array_equal(results.confusion, [[0, 0, 1], [1, 1, 1], [0, 0, 0]])
        # IoU_bg = 0 / (1 + 1 - 0), IoU_cat = 1 / (3 + 1 - 1); "(unnamed)" not in mean
        assert results.miou == pytest.approx((0 + 1 / 3) / 2)
    finally:
        ds.delete()

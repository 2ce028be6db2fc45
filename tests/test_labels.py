"""faseg_core.labels: PIL's nearest rule for every integer dtype, torch's bicubic weights, and
score maps → label maps against a dense reference."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from faseg_core.labels import bicubic_matrix, labels_from_scores, nearest_index, resize_labels, top_scores

SIZE_PAIRS = [(a, b) for a in range(1, 41) for b in range(1, 41)] + [
    (512, n) for n in (1, 7, 333, 375, 500, 511, 513, 1000, 4001)
] + [(n, 512) for n in (3, 64, 375, 1023)] + [(128, 90), (128, 120), (16, 6000)]


def pil_nearest(labels, width, height):
    """PIL's own nearest resize; uint16 goes through mode "I" (PIL's 32-bit integers)."""
    wide = labels.dtype != np.uint8
    image = Image.fromarray(labels.astype(np.int32) if wide else labels)
    return np.asarray(image.resize((width, height), Image.NEAREST)).astype(labels.dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32])
def test_nearest_resize_is_pils_for_every_integer_dtype(dtype):
    rng = np.random.default_rng(0)
    for n_in, n_out in SIZE_PAIRS:
        labels = rng.integers(0, np.iinfo(dtype).max, (n_in, 5), dtype=dtype)  # rows n_in -> n_out
        assert np.array_equal(resize_labels(labels, 7, n_out), pil_nearest(labels, 7, n_out)), (n_in, n_out)
        assert np.array_equal(resize_labels(labels.T, n_out, 7), pil_nearest(labels.T, n_out, 7)), (n_in, n_out)
    labels = rng.integers(0, 200, (37, 53), dtype=dtype)
    assert resize_labels(labels, 53, 37) is labels
    assert resize_labels(labels, 20, 90).dtype == dtype


def test_nearest_index_where_a_centre_is_on_a_pixel_edge():
    # 2 -> 7: the centre of output 3 is exactly 1.0; PIL's accumulated sum lands just below it
    assert nearest_index(2, 7).tolist() == [0, 0, 0, 0, 1, 1, 1]
    ramp = np.arange(2, dtype=np.uint8)[None]
    assert np.asarray(Image.fromarray(ramp).resize((7, 1), Image.NEAREST))[0].tolist() == [0, 0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize("n_in, n_out", [(16, 128), (64, 512), (7, 30), (30, 7), (64, 100), (1, 8), (5, 5)])
def test_bicubic_matrix_is_torch_bicubic(n_in, n_out):
    eye = torch.eye(n_in).reshape(1, n_in, n_in, 1)  # channel j = basis vector e_j
    expected = F.interpolate(eye, size=(n_out, 1), mode="bicubic", align_corners=False)[0, :, :, 0].T
    np.testing.assert_allclose(bicubic_matrix(n_in, n_out), expected.numpy(), rtol=0, atol=1e-5)


def test_threshold_makes_background_and_the_best_class_wins():
    scores = np.array([[[0.9, 0.2], [0.5, 0.6]], [[0.1, 0.7], [0.54, 0.3]]], np.float32)  # (2, 2, 2)
    assert labels_from_scores(scores, 0.55, 2, 2, 2).tolist() == [[1, 2], [0, 1]]
    assert labels_from_scores(scores, 0.0, 2, 2, 2).tolist() == [[1, 2], [2, 1]]


def dense_labels(scores, threshold, size, width, height):
    """The textbook path: bicubic to size × size with torch, argmax, threshold, PIL nearest."""
    up = F.interpolate(torch.from_numpy(scores)[None], size=(size, size), mode="bicubic", align_corners=False)[0]
    top2 = up.topk(2, dim=0).values.numpy()
    labels = np.where(top2[0] >= threshold, up.argmax(0).numpy() + 1, 0).astype(np.uint8)
    ties = (np.abs(top2[0] - threshold) < 1e-5) | (top2[0] - top2[1] < 1e-5)
    return pil_nearest(labels, width, height), pil_nearest(ties.astype(np.uint8), width, height).astype(bool)


@pytest.mark.parametrize("width, height", [(50, 40), (128, 128), (300, 170), (7, 500)])
def test_labels_from_scores_equal_the_dense_path(width, height):
    scores = np.random.default_rng(1).random((3, 16, 16), dtype=np.float32)
    for threshold in (0.4, 0.55, 0.7):
        labels = labels_from_scores(scores, threshold, 128, width, height)
        expected, ties = dense_labels(scores, threshold, 128, width, height)
        assert labels.shape == (height, width) and labels.dtype == np.uint8
        assert ties.mean() < 1e-3 and np.array_equal(labels[~ties], expected[~ties])
        top, index = top_scores(scores, 128, width, height)
        assert np.array_equal(labels, np.where(top >= np.float32(threshold), index + 1, 0))


def test_top_scores_over_kept_classes():
    scores = np.random.default_rng(2).random((4, 8, 8), dtype=np.float32)
    top, index = top_scores(scores, 64, 30, 20)
    kept_top, kept_index = top_scores(scores, 64, 30, 20, keep=[1, 3])
    assert set(np.unique(kept_index)) <= {1, 3} and (kept_top <= top).all()
    assert np.array_equal(kept_top[np.isin(index, [1, 3])], top[np.isin(index, [1, 3])])
    none_top, none_index = top_scores(scores, 64, 30, 20, keep=[])
    assert none_top.shape == (20, 30) and (none_top == -np.inf).all() and (none_index == -1).all()
    assert labels_from_scores(np.repeat(scores, 75, axis=0), 0.5, 64, 30, 20).dtype == np.uint16  # 300 classes


def test_labels_import_needs_no_torch():
    import subprocess
    import sys

    code = "import sys, faseg_core.labels; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"

"""faseg_core.readout: the batched on-device readout equals the numpy path and PIL's nearest rule."""

import numpy as np
import pytest
import torch
from PIL import Image

from faseg_core import readout
from faseg_core.labels import labels_from_scores
from faseg_core.tokens import ClassPrompt

SIZES = [(w, h) for w in (1, 7, 40, 127, 128, 129, 300) for h in (1, 33, 90, 128, 250)] + [(500, 375), (1000, 13)]


def prompt(spans):
    return ClassPrompt("x", tuple(f"c{i}" for i in range(len(spans))), tuple(tuple(s) for s in spans))


def plan_for(counts, sizes):
    return readout.plan([[prompt([[1 + i] for i in range(k)])] for k in counts], sizes, 77, torch.device("cpu"))


def pil_nearest(labels, width, height):
    return np.asarray(Image.fromarray(labels).resize((width, height), Image.NEAREST))


@pytest.mark.parametrize("block", [None, 1])
def test_batched_labels_equal_the_numpy_path_bit_for_bit(monkeypatch, block):
    """Images of many sizes and class counts in one pass give what `labels_from_scores` gives
    each alone (the same float32 operations in the same order), and the resize is PIL's."""
    if block:
        monkeypatch.setitem(readout.BLOCK_ELEMENTS, "cpu", block)
    rng = np.random.default_rng(0)
    for start in range(0, len(SIZES), 12):
        sizes = SIZES[start : start + 12]
        counts = [1 + (i * 5) % 7 for i in range(len(sizes))]
        scores = rng.random((len(sizes), max(counts), 16, 16), dtype=np.float32)
        for i, k in enumerate(counts):
            scores[i, k:] = 0.99  # padded slots must never win, whatever they hold
        plan = plan_for(counts, sizes)
        labels = readout.label_maps(torch.from_numpy(scores), plan, 0.55, 128)
        for (label_map, _), (width, height), k, s in zip(readout.to_host(labels, None, plan), sizes, counts, scores):
            expected = labels_from_scores(s[:k], 0.55, 128, width, height)
            assert label_map.dtype == expected.dtype and np.array_equal(label_map, expected), (width, height, k)
            square = labels_from_scores(s[:k], 0.55, 128, 128, 128)  # the label map at the model's square
            assert np.array_equal(label_map, pil_nearest(square, width, height)), (width, height)


def test_host_copy_keeps_scores_and_wide_label_dtypes():
    counts, sizes = [300, 2], [(20, 10), (5, 6)]
    scores = torch.rand(2, 300, 8, 8)
    plan = plan_for(counts, sizes)
    labels = readout.label_maps(scores, plan, 0.3, 64)
    assert labels.dtype == torch.int32
    (a, sa), (b, sb) = readout.to_host(labels, scores, plan)
    assert a.dtype == np.uint16 and a.shape == (10, 20) and b.dtype == np.uint8 and b.shape == (6, 5)
    assert np.array_equal(a, labels_from_scores(scores[0].numpy(), 0.3, 64, 20, 10))
    assert np.array_equal(sa, scores[0].numpy()) and np.array_equal(sb, scores[1, :2].numpy())
    assert 0 < b.max() <= 2


def test_class_maps_are_the_mean_of_each_class_tokens_columns():
    """`columns` names each latent's class-token columns (padding repeats column 0);
    `class_maps` of those columns of a full store is each class's mean over its tokens."""
    views, r = 2, 4
    spans = [[[1], [3, 4, 5]], [[1, 2], [4], [6]]]  # per image: each class's token positions
    second_prompt = [[0 + 1], [2]]  # a second prompt of image 1 (its tokens counted from 77)
    prompts = [[prompt(spans[0])], [prompt(spans[1]), prompt(second_prompt)]]
    plan = readout.plan(prompts, [(8, 8), (8, 8)], 77, torch.device("cpu"))
    flat = [spans[0], spans[1] + [[77 + t for t in s] for s in second_prompt]]
    columns = readout.columns(plan, views)
    assert columns.tolist() == [[1, 0, 0, 3, 4, 5] + [0] * 9] * views + [[1, 2, 0, 4, 0, 0, 6, 0, 0, 78, 0, 0, 79, 0, 0]] * views
    cross = torch.rand(2 * views, r * r, 2 * 77)
    maps = readout.class_maps(cross[torch.arange(2 * views)[:, None], :, columns].transpose(1, 2), plan, views)
    assert maps.shape == (4, 5, r, r)
    for latent in range(2 * views):
        for k, tokens in enumerate(flat[latent // views]):
            expected = cross[latent][:, tokens].mean(-1).reshape(r, r)
            torch.testing.assert_close(maps[latent, k], expected, rtol=0, atol=1e-7)
    assert (maps[:views, 2:] == 0).all()  # padded classes of image 0
    with pytest.raises(ValueError, match="154 columns per latent, the readout wants 15"):
        readout.class_maps(cross, plan, views)  # a store of every token column

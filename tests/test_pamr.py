"""PAMR (faseg_core.pamr): shapes, range, edges, and the pipeline switch."""

import numpy as np
import pytest
import torch

from faseg_core.pamr import local_affinity, pamr


def _edge_scene(size=64, edge=40, coarse_edge=32):
    """An image with a sharp colour edge at x = `edge`, and smooth scores whose edge is at `coarse_edge`."""
    g = torch.Generator().manual_seed(0)
    image = torch.empty(3, size, size)
    image[:, :, :edge] = torch.tensor([0.8, 0.2, 0.1])[:, None, None]
    image[:, :, edge:] = torch.tensor([0.1, 0.3, 0.9])[:, None, None]
    image += 0.02 * torch.randn(3, size, size, generator=g)
    x = torch.arange(size).float()
    left = torch.sigmoid((coarse_edge - x) / 3).expand(size, size)
    scores = torch.stack([left, 1 - left])  # [2, size, size]
    truth = (x >= edge).long().expand(size, size)
    return image, scores, truth


def _miou(labels, truth):
    return np.mean([(((labels == c) & (truth == c)).sum() / ((labels == c) | (truth == c)).sum()).item() for c in (0, 1)])


def test_shapes_and_range():
    image, scores, _ = _edge_scene()
    out = pamr(image, scores, iterations=3, dilations=(1, 2))
    assert out.shape == scores.shape and out.dtype == torch.float32
    assert out.min() >= scores.min() - 1e-6 and out.max() <= scores.max() + 1e-6
    batched = pamr(image[None].repeat(2, 1, 1, 1), scores[None].repeat(2, 1, 1, 1), iterations=3, dilations=(1, 2))
    assert batched.shape == (2, 2, 64, 64) and torch.allclose(batched[1], out, atol=1e-6)
    coarse = pamr(image, scores[:, ::4, ::4], iterations=1, dilations=(1,))  # masks resized to the image
    assert coarse.shape == (2, 64, 64)
    weights = local_affinity(image[None], (1, 2))
    assert weights.shape == (1, 1, 16, 64, 64) and torch.allclose(weights.sum(2), torch.ones(1, 1, 64, 64))
    assert torch.equal(pamr(image, scores, iterations=0), scores)


def test_snaps_to_colour_edges():
    image, scores, truth = _edge_scene()
    before = _miou(scores.argmax(0), truth)
    after = _miou(pamr(image, scores, iterations=10, dilations=(1, 2, 4, 8, 12, 24)).argmax(0), truth)
    assert before < 0.85 and after > 0.97


def test_bad_arguments():
    image, scores, _ = _edge_scene(16, 10, 8)
    with pytest.raises(ValueError, match="`dilations` must be positive"):
        pamr(image, scores, dilations=(0,))
    with pytest.raises(ValueError, match="same B"):
        pamr(image[None], scores[None].repeat(2, 1, 1, 1))


def test_pipeline_switch(tiny_faseg, tmp_path):
    from PIL import Image

    from faseg_core.labels import labels_from_scores

    rng = np.random.RandomState(0)
    path = tmp_path / "img.png"
    Image.fromarray(rng.randint(0, 255, (40, 60, 3), dtype=np.uint8)).save(path)
    config = tiny_faseg.config.replace(pamr=True, pamr_iterations=2, pamr_dilations=(1, 2))
    (result,) = tiny_faseg(str(path), ["cat", "dog"], config=config)
    side = config.image_size // 4
    assert result.scores.shape == (2, side, side) and result.label_map.shape == (40, 60)
    assert np.array_equal(result.label_map, labels_from_scores(result.scores, config.threshold, config.image_size, 60, 40))
    with pytest.raises(ValueError, match="pamr_iterations"):
        config.replace(pamr_iterations=-1)

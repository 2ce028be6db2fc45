"""HARD: the fast right-to-left evaluation against the dense formulation, and an oracle."""

import pytest
import torch

from faseg_core import hard
from faseg_core.labels import labels_from_scores
from faseg_core.testing.dense_hard import dense_refine

CROSS_W = {8: 0.15, 16: 0.70, 32: 0.15, 64: 0.0}
SELF_W = {8: 0.1, 16: 0.1, 32: 0.5, 64: 0.3}


def random_maps(k, sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    cross = {r: torch.rand(k, r, r, generator=g) for r in sizes}
    selfm = {r: torch.softmax(4 * torch.randn(r * r, r * r, generator=g), dim=-1) for r in sizes}
    return cross, selfm


@pytest.mark.parametrize("tau", [1, 2, 3])
def test_refine_equals_dense_formulation_at_32(tau):
    cross_w = {4: 0.15, 8: 0.7, 16: 0.15, 32: 0.0}
    self_w = {4: 0.1, 8: 0.1, 16: 0.5, 32: 0.3}
    cross, selfm = random_maps(5, (4, 8, 16, 32), seed=tau)
    fast = hard.refine(cross, selfm, cross_w, self_w, tau=tau)
    dense = dense_refine(cross, selfm, cross_w, self_w, tau)
    assert fast.shape == (5, 32, 32)
    assert torch.allclose(fast, dense, rtol=1e-4, atol=1e-5), (fast - dense).abs().max()


def test_refine_equals_dense_formulation_paper_grids():
    cross, selfm = random_maps(20, (8, 16, 32, 64), seed=7)
    fast = hard.refine(cross, selfm)  # paper weights by default
    dense = dense_refine(cross, selfm, CROSS_W, SELF_W, 2)
    assert fast.shape == (20, 64, 64)
    rel = ((fast - dense).abs() / dense.abs().clamp_min(1e-3)).max()
    assert rel < 1e-4, rel


def test_cross_grid_finer_than_every_self_grid():
    """Output on the finest weighted grid, even when it only carries cross-attention."""
    cross, selfm = random_maps(3, (8, 16), seed=5)
    cw, sw = {8: 0.5, 16: 0.5}, {8: 1.0}
    fast = hard.refine(cross, selfm, cw, sw)
    assert fast.shape == (3, 16, 16)
    assert torch.allclose(fast, dense_refine(cross, selfm, cw, sw, 2), rtol=1e-4, atol=1e-5)


def test_refine_batched_equals_per_item():
    cross, selfm = random_maps(3, (4, 8), seed=1)
    cw, sw = {4: 0.5, 8: 0.5}, {4: 0.4, 8: 0.6}
    cross2, selfm2 = random_maps(3, (4, 8), seed=2)
    batched = hard.refine(
        {r: torch.stack([cross[r], cross2[r]]) for r in cross},
        {r: torch.stack([selfm[r], selfm2[r]]) for r in selfm}, cw, sw,
    )
    assert torch.allclose(batched[0], hard.refine(cross, selfm, cw, sw), atol=1e-6)
    assert torch.allclose(batched[1], hard.refine(cross2, selfm2, cw, sw), atol=1e-6)


def test_identity_affinity_returns_normalised_cross_attention():
    cross = {8: torch.rand(4, 8, 8)}
    selfm = {8: torch.eye(64)}
    out = hard.refine(cross, selfm, {8: 1.0}, {8: 1.0}, tau=2)
    assert torch.allclose(out, hard.minmax(cross[8]), atol=1e-6)


def test_constant_maps_give_zeros_not_nan():
    out = hard.refine({4: torch.ones(2, 4, 4)}, {4: torch.full((16, 16), 1 / 16)}, {4: 1.0}, {4: 1.0})
    assert torch.isfinite(out).all() and (out == 0).all()


def test_missing_self_grid_is_named():
    with pytest.raises(ValueError, match="no grid \\[8\\]"):
        hard.refine({4: torch.rand(1, 4, 4)}, {4: torch.eye(16)}, {4: 1.0}, {4: 0.5, 8: 0.5})


def test_unflip_average_of_mirrored_pair_is_identity():
    s = torch.rand(3, 8, 8)
    assert torch.equal(hard.unflip_average(torch.stack([s, s.flip(-1)])), s)


def planted_scene(size=32):
    """Three rectangles (classes 1..3) and background; a self-attention that stays in each region."""
    labels = torch.zeros(size, size, dtype=torch.long)
    labels[2:14, 2:20] = 1
    labels[18:30, 4:14] = 2
    labels[16:30, 18:30] = 3
    return labels


def planted_maps(labels, r, peaks, noise, g):
    """Self-attention at grid r uniform within each planted region; cross peaks at `peaks`."""
    size = labels.shape[0]
    grid = labels[size // r // 2 :: size // r, size // r // 2 :: size // r].reshape(-1)  # (r²,)
    same = (grid[:, None] == grid[None, :]).float()
    self_map = same / same.sum(-1, keepdim=True)
    cross = noise * torch.rand(len(peaks), r, r, generator=g)
    for k, (y, x) in enumerate(peaks):
        cross[k, y * r // size, x * r // size] += 1.0
    return cross, self_map


def test_oracle_planted_regions_come_back():
    labels = planted_scene(32)
    peaks = [(8, 10), (24, 8), (22, 24)]
    g = torch.Generator().manual_seed(0)
    cross, selfm = {}, {}
    for r in (4, 8, 16, 32):
        cross[r], selfm[r] = planted_maps(labels, r, peaks, noise=0.05, g=g)
    cw = {4: 0.15, 8: 0.7, 16: 0.15, 32: 0.0}
    sw = {4: 0.1, 8: 0.1, 16: 0.5, 32: 0.3}
    scores = hard.refine(cross, selfm, cw, sw, tau=2)
    pred = torch.from_numpy(labels_from_scores(scores.numpy(), 0.55, 32, 32, 32).astype("int64"))
    for k in (0, 1, 2, 3):
        inter = ((pred == k) & (labels == k)).sum().item()
        union = ((pred == k) | (labels == k)).sum().item()
        assert inter / union >= 0.9, (k, inter / union)


@pytest.mark.parametrize("k", [hard.ROW_PRODUCT_CLASSES, 20, 40])
@pytest.mark.parametrize("r", [32, 64])
def test_row_products_give_the_column_products_values_bit_for_bit(k, r):
    # from ROW_PRODUCT_CLASSES classes on, propagate multiplies x·Aᵀ for speed: the values
    # must be those of A·xᵀ (the reference's order), or the parity with earlier outputs is lost
    g = torch.Generator().manual_seed(k + r)
    affinity = torch.softmax(4 * torch.randn(2, r * r, r * r, generator=g), dim=-1)  # [2, r², r²]
    maps = torch.rand(2, k, r, r, generator=g)
    x = hard.sum_pool(maps, r)
    for _ in range(2):  # tau = 2 at the output grid: A·(A·x)
        x = (affinity @ x.flatten(-2).transpose(-1, -2)).transpose(-1, -2).unflatten(-1, (r, r))
    assert torch.equal(hard.propagate(affinity, maps, tau=2), x)

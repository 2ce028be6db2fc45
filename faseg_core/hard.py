"""HARD: hierarchical attention refinement, as pure tensor functions.

Notation (FASEG_REFERENCE.md §6): for a self-attention grid of side r below the output
side S, the affinity on the S×S grid is A_r = B·S_r·Nᵀ, with B the bicubic upsampling of
the query grid and N the nearest repetition of the key grid. We never build A_r: the
refined map A_r^τ·c is evaluated right to left, so the work stays on the r×r grid:

    A_r^τ c = B · S_r · (Nᵀ B · S_r)^(τ-1) · Nᵀ c

where Nᵀ is a sum over each (S/r)² block and B is `F.interpolate(mode="bicubic")`.
Everything here runs in float32, whatever the dtype of the maps given.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import default_cross_weights, default_self_weights

EPS = 1e-8
# From this many classes on, `propagate` multiplies as x·Aᵀ (classes as the GEMM's rows):
# MKL then gives A·xᵀ's values bit for bit (measured for 12 to 64 classes at the 32 and 64
# grids, 1 and 2 threads) in 0.5–1.0× the time at the 64 grid (0.79× at 20 classes). With
# fewer classes x·Aᵀ rounds differently, so A·xᵀ stays.
ROW_PRODUCT_CLASSES = 12


def upsample_nearest(maps: torch.Tensor, size: int) -> torch.Tensor:
    """`[..., K, r, r]` → `[..., K, size, size]` by repetition (r divides size)."""
    r = maps.shape[-1]
    if r == size:
        return maps
    f = size // r
    return maps.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1)


def sum_pool(maps: torch.Tensor, r: int) -> torch.Tensor:
    """`[..., K, S, S]` → `[..., K, r, r]`: the sum over each (S/r)² block (Nᵀ)."""
    size = maps.shape[-1]
    if r == size:
        return maps
    f = size // r
    return maps.unflatten(-1, (r, f)).unflatten(-3, (r, f)).sum(dim=(-3, -1))


def upsample_bicubic(maps: torch.Tensor, size: int) -> torch.Tensor:
    """`[..., K, r, r]` → `[..., K, size, size]`, bicubic, align_corners=False (B)."""
    if maps.shape[-1] == size:
        return maps
    lead = maps.shape[:-2]
    flat = maps.reshape(1, -1, *maps.shape[-2:])
    up = F.interpolate(flat, size=(size, size), mode="bicubic", align_corners=False)
    return up.reshape(*lead, size, size)


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Per-map min–max normalisation of `[..., H, W]` to [0, 1]; a constant map gives 0."""
    lo = maps.amin(dim=(-2, -1), keepdim=True)
    hi = maps.amax(dim=(-2, -1), keepdim=True)
    return (maps - lo) / (hi - lo).clamp_min(EPS)


def fuse_cross(cross_maps: dict[int, torch.Tensor], weights: dict[int, float], size: int) -> torch.Tensor:
    """Weighted sum of cross-attention maps `[..., K, r, r]`, each repeated to `[..., K, size, size]`."""
    fused = None
    for r, w in weights.items():
        if w == 0 or r not in cross_maps:
            continue
        term = w * upsample_nearest(cross_maps[r].float(), size)
        fused = term if fused is None else fused + term
    if fused is None:
        raise ValueError(f"no cross-attention map for any weighted resolution {sorted(weights)}")
    return fused


def propagate(self_map: torch.Tensor, maps: torch.Tensor, tau: int = 2) -> torch.Tensor:
    """A_r^τ · maps without forming A_r.

    Args:
        self_map: `[..., r², r²]` self-attention, rows = queries, columns = keys.
        maps: `[..., K, S, S]` maps on the output grid.
    Returns:
        `[..., K, S, S]` float32.
    """
    r = int(round(self_map.shape[-1] ** 0.5))
    size = maps.shape[-1]
    affinity = self_map.float()
    x = sum_pool(maps.float(), r)  # [..., K, r, r]
    for step in range(tau):
        if step:
            x = sum_pool(upsample_bicubic(x, size), r)  # Nᵀ B
        flat = x.flatten(-2)  # [..., K, r²]
        if flat.shape[-2] >= ROW_PRODUCT_CLASSES:
            flat = flat @ affinity.transpose(-1, -2)
        else:
            flat = (affinity @ flat.transpose(-1, -2)).transpose(-1, -2)
        x = flat.unflatten(-1, (r, r))  # [..., K, r, r]
    return upsample_bicubic(x, size)


def refine(
    cross_maps: dict[int, torch.Tensor],
    self_maps: dict[int, torch.Tensor],
    cross_weights: dict[int, float] | None = None,
    self_weights: dict[int, float] | None = None,
    tau: int = 2,
) -> torch.Tensor:
    """HARD refinement of class maps.

    Args:
        cross_maps: `{r: [..., K, r, r]}` per-class cross-attention.
        self_maps: `{r: [..., r², r²]}` self-attention, query-major.
        cross_weights, self_weights: per-resolution weights (paper defaults if `None`).
        tau: power of the affinity.
    Returns:
        `[..., K, S, S]` float32 scores in [0, 1], S the largest weighted grid side.
    """
    cross_weights = default_cross_weights() if cross_weights is None else cross_weights
    self_weights = default_self_weights() if self_weights is None else self_weights
    used = [r for r, w in self_weights.items() if w > 0]
    missing = [r for r in used if r not in self_maps]
    if missing:
        raise ValueError(f"`self_maps` has no grid {missing}; it has {sorted(self_maps)}")
    # the finest weighted grid (64 with the paper's weights: its self-attention grid)
    size = max(used + [r for r, w in cross_weights.items() if w > 0])
    fused = fuse_cross(cross_maps, cross_weights, size)  # [..., K, S, S]

    scores = None
    for r in used:
        term = self_weights[r] * minmax(propagate(self_maps[r], fused, tau))
        scores = term if scores is None else scores + term
    return scores


def unflip_average(scores: torch.Tensor) -> torch.Tensor:
    """`[..., 2, K, S, S]` scores of (image, mirrored image) → `[..., K, S, S]` test-time-flip mean."""
    return 0.5 * (scores[..., 0, :, :, :] + scores[..., 1, :, :, :].flip(-1))


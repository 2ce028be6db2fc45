"""HARD written out densely (FASEG_REFERENCE.md §6): the reference the fast `hard.refine`
is checked against in tests and timed against in benchmarks. Forms S²×S² matrices and a
matrix power: never use it for real work."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dense_affinity(self_map: torch.Tensor, size: int) -> torch.Tensor:
    """A_r `(size², size²)`: bicubic upsampling of the query grid, nearest repetition of the keys."""
    n = self_map.shape[0]
    r = int(round(n**0.5))
    if r == size:
        return self_map
    query_maps = self_map.T.reshape(n, 1, r, r)  # (keys, 1, r, r): each key's map over the queries
    up = F.interpolate(query_maps, size=(size, size), mode="bicubic", align_corners=False)
    rows = up.reshape(n, size * size).T  # (size² queries, r² keys)
    f = size // r
    key_of = (torch.arange(size)[:, None] // f * r + torch.arange(size)[None, :] // f).reshape(-1)
    return rows[:, key_of]  # (size² queries, size² keys)


def dense_refine(cross_maps, self_maps, cross_weights, self_weights, tau=2) -> torch.Tensor:
    """`[K, S, S]` HARD scores from `{r: [K, r, r]}` cross maps and `{r: [r², r²]}` self maps."""
    size = max(r for weights in (cross_weights, self_weights) for r, w in weights.items() if w > 0)
    fused = sum(
        w * F.interpolate(cross_maps[r][None].float(), size=(size, size), mode="nearest")[0]
        for r, w in cross_weights.items()
        if w > 0
    )  # (K, size, size)
    c = fused.reshape(fused.shape[0], -1).T  # (size², K)
    out = 0
    for r, w in self_weights.items():
        if w == 0:
            continue
        a = torch.linalg.matrix_power(dense_affinity(self_maps[r].float(), size), tau)
        s = (a @ c).T.reshape(-1, size, size)
        del a
        lo, hi = s.amin((1, 2), keepdim=True), s.amax((1, 2), keepdim=True)
        out = out + w * (s - lo) / (hi - lo)
    return out

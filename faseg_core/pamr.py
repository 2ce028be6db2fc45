"""PAMR: pixel-adaptive mask refinement (Araslanov & Roth, CVPR 2020), training-free.

Score maps are propagated between neighbouring pixels with weights that come from the
image colours alone: for every pixel, the affinities to its 8 neighbours at each dilation
are `-|I(x) - I(y)| / (0.1 * std_local(x))`, averaged over the colour channels and
normalised with a softmax over all neighbours; the maps are then replaced by the
affinity-weighted mean of their neighbours' values, `iterations` times. Boundaries snap to
colour edges; flat regions are smoothed. The CLIP-based training-free segmenters (SCLIP,
ClearCLIP, ProxyCLIP) apply it to their logits before the argmax.

Neighbours are gathered by slicing a replicate-padded tensor (no convolution kernels), so
everything is device- and dtype-agnostic; the work runs in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_DILATIONS: tuple[int, ...] = (1, 2, 4, 8, 12, 24)
DEFAULT_ITERATIONS = 10
_OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def _neighbours(x: torch.Tensor, dilations, center: bool = False) -> torch.Tensor:
    """`[B, C, H, W]` → `[B, C, P, H, W]`: the values of each pixel's neighbours.

    P = 8 per dilation (9 with `center`), borders replicated.
    """
    h, w = x.shape[-2:]
    offsets = _OFFSETS + ([(0, 0)] if center else [])
    out = []
    for d in dilations:
        padded = F.pad(x, [d, d, d, d], mode="replicate")  # [B, C, H + 2d, W + 2d]
        for dy, dx in offsets:
            out.append(padded[..., d + dy * d : d + dy * d + h, d + dx * d : d + dx * d + w])
    return torch.stack(out, dim=2)


def local_affinity(image: torch.Tensor, dilations=DEFAULT_DILATIONS) -> torch.Tensor:
    """Normalised pixel affinities of an image.

    Args:
        image (`torch.Tensor`): `[B, C, H, W]` colours (any scale: the affinity is divided by the
            local standard deviation).
        dilations (`tuple[int, ...]`): neighbourhood dilations of the 3×3 kernel.
    Returns:
        `[B, 1, P, H, W]` float32 weights over the P = 8 · len(dilations) neighbours, summing to 1.
    """
    image = image.float()
    std = _neighbours(image, dilations, center=True).std(dim=2, keepdim=True)  # [B, C, 1, H, W]
    diff = (image.unsqueeze(2) - _neighbours(image, dilations)).abs()  # [B, C, P, H, W]
    affinity = (-diff / (1e-8 + 0.1 * std)).mean(dim=1, keepdim=True)  # [B, 1, P, H, W]
    return affinity.softmax(dim=2)


def pamr(
    image: torch.Tensor,
    masks: torch.Tensor,
    iterations: int = DEFAULT_ITERATIONS,
    dilations=DEFAULT_DILATIONS,
) -> torch.Tensor:
    """Refine score maps along the colour edges of an image.

    Args:
        image (`torch.Tensor`): `[B, 3, H, W]` or `[3, H, W]` image.
        masks (`torch.Tensor`): `[B, K, h, w]` or `[K, h, w]` score maps; resized bilinearly to
            `(H, W)` when their size differs.
        iterations (`int`, defaults to 10): propagation steps.
        dilations (`tuple[int, ...]`, defaults to `(1, 2, 4, 8, 12, 24)`): neighbourhood dilations.
    Returns:
        `[B, K, H, W]` (or `[K, H, W]`) float32 refined maps. Each step is a convex combination of
        neighbours, so the values stay within the input's range.
    """
    if iterations < 0:
        raise ValueError(f"`iterations` must be >= 0 but is {iterations}.")
    if not dilations or any(int(d) != d or d < 1 for d in dilations):
        raise ValueError(f"`dilations` must be positive integers but are {dilations}.")
    single = masks.dim() == 3
    if single:
        image, masks = image.unsqueeze(0), masks.unsqueeze(0)
    if image.dim() != 4 or masks.dim() != 4 or image.shape[0] != masks.shape[0]:
        raise ValueError(
            f"`image` {tuple(image.shape)} and `masks` {tuple(masks.shape)} must be [B, C, H, W] and "
            "[B, K, h, w] with the same B (or [C, H, W] and [K, h, w])."
        )
    masks = masks.float().to(image.device)
    size = tuple(image.shape[-2:])
    if tuple(masks.shape[-2:]) != size:
        masks = F.interpolate(masks, size=size, mode="bilinear", align_corners=False)
    affinity = local_affinity(image, dilations)  # [B, 1, P, H, W]
    for _ in range(iterations):
        masks = (_neighbours(masks, dilations) * affinity).sum(dim=2)  # [B, K, H, W]
    return masks[0] if single else masks


def refine_scores(image, scores: torch.Tensor, size: int, iterations: int = DEFAULT_ITERATIONS,
                  dilations=DEFAULT_DILATIONS) -> torch.Tensor:
    """PAMR on FA-Seg scores: `[K, S, S]` → `[K, size, size]` on `scores.device`.

    The scores are upsampled bicubically to `size` (as `labels.labels_from_scores` does) and refined with
    the RGB PIL `image` resized to `size` (PIL bicubic, as the VAE input).
    """
    from .hard import upsample_bicubic
    from .images import to_pixels

    pixels = to_pixels([image], size).to(scores.device)  # [1, 3, size, size]
    up = upsample_bicubic(scores.float(), size)  # [K, size, size]
    return pamr(pixels[0], up, iterations, dilations)

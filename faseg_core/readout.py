"""After the UNet pass: recorded attention → scores and label maps, for all images of a pass at once.

Everything runs on the model's device, batched over the pass's images (each with its own
classes and size): the recorder stores only the cross-attention columns of each image's class
tokens (`columns`), which `class_maps` averages into class maps; HARD refines the views of
consecutive images with the same number of classes together (`hard.refine`, on those
classes only, so an image's scores do not depend on its batch); the test-time flip is
averaged, and the label maps are read out on the grid PIL's nearest resize keeps
(`labels.kept_grid_best`, the same arithmetic as the numpy path, so the labels are the same
bit for bit) and expanded to each image's size. The host receives one copy per pass: the
label maps (uint8 for fewer than 256 classes) and the float32 scores, packed in one buffer.

The per-image bookkeeping (token positions of each class, the kept rows and columns of each
image size) is built on the host with numpy, padded to the widest image of the pass and
moved to the device once; padded classes are masked out of the argmax.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import hard
from .attention import CROSS, SELF, AttentionRecorder
from .labels import kept_grid, kept_grid_best, label_dtype
from .tokens import ClassPrompt

PADDED = -1e30  # score of a padded class slot: bicubic weights keep it far below any real score
BLOCK_ELEMENTS = {"cuda": 2**24, "cpu": 2**18}  # [B, rows, K, C] floats upsampled at once (CPU: cache-sized)


@dataclass
class Readout:
    """Host-side index tensors of one pass, on the device.

    Attributes:
        tokens: `[B, K, T]` flat token columns (prompt p, token t → `p * 77 + t`) of each class.
        token_weights: `[B, K, T]` float32 `1` on a class's tokens, `0` on padding.
        token_counts: `[B, K]` float32 tokens per class (1 on padded classes).
        classes: `[B, K]` bool, the real classes.
        sizes: `(width, height)` of each image; counts: classes per image.
    """

    tokens: torch.Tensor
    token_weights: torch.Tensor
    token_counts: torch.Tensor
    classes: torch.Tensor
    sizes: list[tuple[int, int]]
    counts: list[int]


def _padded(arrays: list[np.ndarray], fill=0) -> np.ndarray:
    """Stack arrays of equal rank, padding every axis to the largest with `fill`."""
    shape = np.max([a.shape for a in arrays], axis=0)
    out = np.full((len(arrays), *shape), fill, dtype=arrays[0].dtype)
    for i, a in enumerate(arrays):
        out[(i, *(slice(0, n) for n in a.shape))] = a
    return out


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    tensor = torch.from_numpy(array)
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def plan(prompts: list[list[ClassPrompt]], sizes: list[tuple[int, int]], length: int, device: torch.device) -> Readout:
    """The index tensors of a pass: `prompts` and `(width, height)` of each image, the
    prompt `length` (77)."""
    tokens, weights = [], []
    for image_prompts in prompts:
        spans = [[p * length + t for t in span] for p, prompt in enumerate(image_prompts) for span in prompt.spans]
        widest = max(len(s) for s in spans)
        tokens.append(np.array([s + [0] * (widest - len(s)) for s in spans], dtype=np.int64))
        weights.append(np.array([[1.0] * len(s) + [0.0] * (widest - len(s)) for s in spans], dtype=np.float32))
    token_weights = _padded(weights)
    counts = [len(t) for t in tokens]
    return Readout(
        tokens=_to_device(_padded(tokens), device),
        token_weights=_to_device(token_weights, device),
        token_counts=_to_device(np.maximum(token_weights.sum(-1), 1).astype(np.float32), device),
        classes=_to_device(np.arange(max(counts))[None] < np.array(counts)[:, None], device),
        sizes=list(sizes),
        counts=counts,
    )


def _kept_grids(sizes, image_size: int, side: int, device: torch.device):
    """Bicubic taps `(index [B, M, 4], weights [B, M, 4])` of the kept rows and of the kept
    columns of each image, and `[B, H]` / `[B, W]` positions of its rows / columns among them."""
    rows = [kept_grid(image_size, side, height) for _, height in sizes]
    cols = [kept_grid(image_size, side, width) for width, _ in sizes]
    stacked = [_to_device(_padded([g[i] for g in grids]), device) for grids in (rows, cols) for i in range(3)]
    return (stacked[0], stacked[1]), (stacked[3], stacked[4]), stacked[2], stacked[5]


def columns(readout: Readout, views: int) -> torch.Tensor:
    """`[B*V, K*T]` token columns of each latent's classes: the `class_tokens` a recorder is
    given (`cross_attention_kwargs`), so it stores only the columns `class_maps` reads."""
    return readout.tokens.flatten(1).repeat_interleave(views, dim=0)


def class_maps(cross: torch.Tensor, readout: Readout, views: int) -> torch.Tensor:
    """`[B*V, N, K*T]` class-token attention (recorded with `columns(readout, views)`) →
    `[B*V, K, r, r]`: each class the mean of its tokens' maps, every class of every image at once."""
    latents, n, width = cross.shape
    k, t = readout.tokens.shape[1:]
    if width != k * t:
        raise ValueError(f"the cross-attention store has {width} columns per latent, the readout wants {k * t} "
                         "(record the pass with `class_tokens=readout.columns(plan, views)`)")
    weights = readout.token_weights.repeat_interleave(views, dim=0)[:, None]  # [B*V, 1, K, T]
    counts = readout.token_counts.repeat_interleave(views, dim=0)[:, None]  # [B*V, 1, K]
    maps = (cross.unflatten(-1, (k, t)) * weights).sum(-1) / counts
    r = int(round(n**0.5))
    return maps.transpose(1, 2).unflatten(-1, (r, r))  # [B*V, K, r, r]


def refine(recorder: AttentionRecorder, readout: Readout, cfg, views: int) -> torch.Tensor:
    """HARD on every view of every image of the pass → `[B*V, K, S, S]` float32 (padded
    classes 0).

    Consecutive images with the same number of classes are refined together, each with its
    own classes only: the products have the columns an image alone would give them (a GEMM
    rounds by its shape), so an image's scores do not depend on the batch it is in.
    A float32 self-attention store becomes its mean in place (the recorder is reset after);
    a half-precision one is converted to float32 a group of latents at a time, so at most
    `cfg.attention_chunk` float32 elements of it exist at once.
    """
    cross = {r: class_maps(recorder.mean(CROSS, r), readout, views) for r, w in cfg.cross_weights.items() if w > 0}
    used = [r for r, w in cfg.self_weights.items() if w > 0]
    latents, width = next(iter(cross.values())).shape[:2]
    largest = max(recorder.sums[(SELF, r)][0].numel() for r in used)
    half = any(recorder.sums[(SELF, r)].dtype != torch.float32 for r in used)
    group = latents if not half else max(views, cfg.attention_chunk // largest // views * views)
    counts = np.repeat(readout.counts, views)  # classes of each latent
    parts, start = [], 0
    while start < latents:
        k, stop = int(counts[start]), min(start + group, latents)
        stop = start + int(np.argmax(np.append(counts[start:stop] != k, True)))  # the run of k classes
        rows = slice(start, stop)
        self_maps = {r: recorder.mean(SELF, r, rows, in_place=True) for r in used}
        part = hard.refine({r: m[rows, :k] for r, m in cross.items()}, self_maps,
                           cfg.cross_weights, cfg.self_weights, cfg.tau)  # [latents, k, S, S]
        parts.append(part if k == width else torch.nn.functional.pad(part, (0, 0, 0, 0, 0, width - k)))
        start = stop
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def label_maps(scores: torch.Tensor, readout: Readout, threshold: float, image_size: int) -> torch.Tensor:
    """`[B, K, s, s]` scores → `[B, H, W]` label maps (0 background, `k + 1` class k), H and W
    the largest of the pass (each image's map is its top-left `(height, width)`)."""
    batch, k = scores.shape[:2]
    rows, cols, row_inverse, col_inverse = _kept_grids(readout.sizes, image_size, scores.shape[-1], scores.device)
    scores = scores.masked_fill(~readout.classes[:, :, None, None], PADDED).permute(0, 2, 3, 1).contiguous()
    block = max(1, BLOCK_ELEMENTS.get(scores.device.type, BLOCK_ELEMENTS["cuda"]) // (batch * cols[0].shape[1] * k))
    top, best = kept_grid_best(scores, rows, cols, block=block)  # [B, R, C]
    dtype = torch.uint8 if k < 256 else torch.int32
    kept = torch.where(top >= torch.tensor(threshold, dtype=torch.float32), best + 1, 0).to(dtype)
    batch_index = torch.arange(batch, device=scores.device)[:, None, None]
    return kept[batch_index, row_inverse[:, :, None], col_inverse[:, None, :]]


def to_host(labels: torch.Tensor, scores: torch.Tensor | None, readout: Readout):
    """One device → host copy of the pass's label maps (and scores): per image, its
    `(height, width)` label map in the smallest dtype for its classes and its `(K, s, s)` scores."""
    parts = [labels.reshape(-1).view(torch.uint8)]
    if scores is not None:
        parts.append(scores.float().contiguous().reshape(-1).view(torch.uint8))
    host = torch.cat(parts).cpu().numpy() if len(parts) > 1 else parts[0].cpu().numpy()
    label_bytes = labels.numel() * labels.element_size()
    all_labels = host[:label_bytes].view(np.uint8 if labels.dtype == torch.uint8 else np.int32).reshape(labels.shape)
    all_scores = None if scores is None else host[label_bytes:].view(np.float32).reshape(scores.shape)
    out = []
    for i, ((width, height), k) in enumerate(zip(readout.sizes, readout.counts)):
        label_map = all_labels[i, :height, :width].astype(label_dtype(k))  # a copy: the pass's buffer is freed
        out.append((label_map, None if all_scores is None else all_scores[i, :k].copy()))
    return out

"""Score maps → label maps: the one implementation the pipeline, re-thresholding and sweeps share.

FA-Seg upsamples the `(K, h, w)` scores bicubically to the model's square `image_size`,
calls a pixel background when its best score is below the threshold (else `1 + argmax`),
and resizes that label map to the image with PIL's nearest rule. Only the rows and
columns the nearest resize keeps are ever computed (`kept_grid`), each as the 4-tap
bicubic sum along the columns, then along the rows (`kept_grid_best`), written as
separate float32 multiplies and adds in one fixed order. The same code runs on numpy
arrays (here) and on torch tensors (`faseg_core.readout`, on the model's device, a
batch of images at once), and IEEE rounding of each operation makes them agree bit for
bit: the same scores give the same labels wherever they are computed (a run on a GPU,
a re-threshold, a sweep).

Imports no torch, so `fiftyone_faseg.metrics` (torch-free) shares `resize_labels`.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

BICUBIC_A = -0.75  # torch's `F.interpolate(mode="bicubic")` (and OpenCV's) cubic coefficient


def label_dtype(max_value: int):
    """The smallest unsigned dtype holding labels up to `max_value` (uint8, uint16, else int32)."""
    return np.uint8 if max_value < 256 else np.uint16 if max_value < 65536 else np.int32


@lru_cache(maxsize=256)
def nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Which of `n_in` positions each of `n_out` positions takes under PIL's nearest resize.

    PIL samples pixel centres, `(i + 0.5) * n_in / n_out`, accumulated step by step in
    double precision and truncated; the same arithmetic here gives PIL's exact indices
    (a closed form differs from it where a centre falls on a pixel edge).
    """
    step = n_in / n_out
    centres = np.cumsum(np.concatenate([[0.5 * step], np.full(n_out - 1, step)]))  # sequential sums, as PIL
    index = np.minimum(centres.astype(np.int64), n_in - 1)
    index.flags.writeable = False
    return index


def resize_labels(labels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Nearest resize of an `(H, W)` label map of any integer dtype to `(height, width)`:
    PIL's `Image.NEAREST`, so uint8, uint16 and int32 maps follow the same indices."""
    if labels.shape == (height, width):
        return labels
    rows, cols = nearest_index(labels.shape[0], height), nearest_index(labels.shape[1], width)
    return labels[rows[:, None], cols[None, :]]


def _cubic(t: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel at distances `|t| < 2`."""
    t = np.abs(t)
    a = BICUBIC_A
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, far)


@lru_cache(maxsize=256)
def bicubic_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """The 4 source positions and float32 weights of each of `n_out` outputs of a bicubic
    resize along one axis, as `F.interpolate(mode="bicubic", align_corners=False)`:
    centres aligned, edge positions clamped. `(n_out, 4)` int64 and float32."""
    x = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    taps = np.floor(x)[:, None] + np.arange(-1, 3)  # [n_out, 4] source positions
    weights = _cubic(x[:, None] - taps).astype(np.float32)
    index = np.clip(taps, 0, n_in - 1).astype(np.int64)
    index.flags.writeable = weights.flags.writeable = False
    return index, weights


@lru_cache(maxsize=64)
def bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """`(n_out, n_in)` float32 weights of a bicubic resize along one axis (`bicubic_taps` as a matrix)."""
    if n_in == n_out:
        return np.eye(n_in, dtype=np.float32)
    index, weights = bicubic_taps(n_in, n_out)
    matrix = np.zeros((n_out, n_in))
    np.add.at(matrix, (np.arange(n_out)[:, None], index), weights.astype(np.float64))
    matrix = matrix.astype(np.float32)
    matrix.flags.writeable = False
    return matrix


@lru_cache(maxsize=256)
def kept_grid(image_size: int, side: int, length: int):
    """Along one axis of a `(side → image_size → length)` readout: the distinct positions of
    the `image_size` grid that PIL's nearest resize to `length` keeps, their bicubic taps
    into the `side` grid, and the position of each of the `length` outputs among them.

    Returns `(index [M, 4] int64, weights [M, 4] float32, inverse [length] int64)`.
    """
    kept, inverse = np.unique(nearest_index(image_size, length), return_inverse=True)
    index, weights = bicubic_taps(side, image_size)
    out = index[kept], weights[kept], inverse.reshape(-1).astype(np.int64)
    for array in out:
        array.flags.writeable = False
    return out


def _fold_taps(values, index, weights):
    """`values[b, index[b, m, t]] * weights[b, m, t]` summed over the 4 taps t in a fixed order,
    for `[B, N, X, K]` values gathered along axis 1: `[B, M, X, K]`.

    Separate multiplies and adds in one order: numpy and torch (CPU or GPU) round alike,
    so every backend gives the same float32 values bit for bit. Gathers copy whole
    `X × K` rows (`take` / `index_select` on the flattened batch).
    """
    batch, n = values.shape[:2]
    rows = values.reshape(batch * n, -1)
    if isinstance(values, np.ndarray):
        offsets = (np.arange(batch) * n)[:, None]
        take = lambda i: np.take(rows, i, axis=0)  # noqa: E731
    else:
        import torch

        offsets = (torch.arange(batch, device=values.device) * n)[:, None]
        take = lambda i: rows.index_select(0, i)  # noqa: E731
    out = None
    for t in range(index.shape[-1]):
        term = take((index[..., t] + offsets).reshape(-1)).reshape(batch, index.shape[1], *values.shape[2:])
        term *= weights[..., t, None, None]  # a fresh array: scaled and added in place
        if out is None:
            out = term
        else:
            out += term
    return out


def kept_grid_best(scores, rows, cols, block: int | None = None):
    """Best score and class of `[B, h, w, K]` scores (classes last, numpy or torch) upsampled
    bicubically on the kept grid: `rows = (index [B, R, 4], weights [B, R, 4])` and the same
    for the columns (`kept_grid`, padded and stacked for a batch). `block` rows at a time
    (keeps the work in the CPU's caches). Returns `(top, index)`, `[B, R, C]`; the first
    class wins ties.
    """
    along_cols = _fold_taps(scores.swapaxes(1, 2), *cols)  # [B, C, h, K]
    # [B, h, K, C], contiguous once: each block gathers whole K × C rows, and the best
    # class is an elementwise maximum over K slices of C values
    if isinstance(along_cols, np.ndarray):
        along_cols = np.ascontiguousarray(along_cols.transpose(0, 2, 3, 1))
    else:
        along_cols = along_cols.permute(0, 2, 3, 1).contiguous()
    n_rows = rows[0].shape[1]
    block = block or n_rows
    tops, best = [], []
    for start in range(0, n_rows, block):
        part = tuple(a[:, start : start + block] for a in rows)
        values = _fold_taps(along_cols, *part)  # [B, r, K, C]
        if isinstance(values, np.ndarray):
            index = values.argmax(axis=2)
            tops.append(np.take_along_axis(values, index[:, :, None], axis=2)[:, :, 0])
        else:
            top, index = values.max(dim=2)
            tops.append(top)
        best.append(index)
    if isinstance(scores, np.ndarray):
        return np.concatenate(tops, axis=1), np.concatenate(best, axis=1)
    import torch

    return torch.cat(tops, dim=1), torch.cat(best, dim=1)


def _best_on_kept_grid(scores, image_size: int, width: int, height: int, keep=None):
    """Best score and class on the distinct rows × columns the nearest resize keeps.

    Returns `(top, index, rows, cols)`: `[R, C]` float32 and int64 (-1 where no class
    is kept), and the `(height,)` / `(width,)` positions of each image row / column in them.
    """
    scores = np.asarray(scores, dtype=np.float32)  # [K, h, w]
    kept = np.arange(scores.shape[0]) if keep is None else np.asarray(keep, dtype=np.int64).reshape(-1)
    row_index, row_weights, rows = kept_grid(image_size, scores.shape[-2], height)
    col_index, col_weights, cols = kept_grid(image_size, scores.shape[-1], width)
    if kept.size == 0:
        shape = (len(row_index), len(col_index))
        return np.full(shape, -np.inf, np.float32), np.full(shape, -1, np.int64), rows, cols
    values = np.ascontiguousarray(scores[kept].transpose(1, 2, 0))[None]  # [1, h, w, K]
    top, best = kept_grid_best(values, (row_index[None], row_weights[None]), (col_index[None], col_weights[None]),
                               block=ROW_BLOCK)
    return top[0], kept[best[0]], rows, cols


ROW_BLOCK = 32  # kept rows upsampled at once on the CPU (a block of [32, C, K] floats stays in cache)


def top_scores(scores, image_size: int, width: int, height: int, keep=None) -> tuple[np.ndarray, np.ndarray]:
    """Best score and class of every pixel of the `(height, width)` label map FA-Seg makes.

    Args:
        scores: `(K, h, w)` score maps (array or CPU tensor).
        image_size (`int`): the model's square side; the scores are upsampled (bicubic) to it.
        width, height (`int`): the image's size (the label map is resized to it, PIL nearest).
        keep (`list[int]`, *optional*): indices of the classes that may win; `None` keeps all.

    Returns:
        `(top, index)`: `(height, width)` float32 best scores and int64 class indices
        (`-inf` and -1 where `keep` is empty).
    """
    top, index, rows, cols = _best_on_kept_grid(scores, image_size, width, height, keep)
    return top[rows[:, None], cols[None, :]], index[rows[:, None], cols[None, :]]


def labels_from_scores(scores, threshold: float, image_size: int, width: int, height: int,
                       keep=None) -> np.ndarray:
    """`(K, h, w)` scores → the `(height, width)` label map: 0 background (best score below
    `threshold`), `k + 1` class k; the smallest unsigned dtype that holds K. `keep`: indices
    of the classes that may win (the others become background or lose to kept ones);
    `None` keeps all."""
    top, index, rows, cols = _best_on_kept_grid(scores, image_size, width, height, keep)
    labels = np.where(top >= np.float32(threshold), index + 1, 0).astype(label_dtype(len(scores)))
    return labels[rows[:, None], cols[None, :]]

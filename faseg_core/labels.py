"""Score maps → label maps: the one implementation the pipeline, re-thresholding and sweeps share.

FA-Seg upsamples the `(K, h, w)` scores bicubically to the model's square `image_size`,
calls a pixel background when its best score is below the threshold (else `1 + argmax`),
and resizes that label map to the image with PIL's nearest rule. Only the rows and
columns the nearest resize keeps are ever computed: the bicubic weights along each axis
are matrices, so the work is two small matrix products, in float32 numpy, on the CPU
whatever device made the scores. The same inputs therefore give the same labels
bit for bit wherever they are computed (a run, a re-threshold, a sweep).

Pure numpy, so `fiftyone_faseg.metrics` (torch-free) shares `resize_labels`.
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


@lru_cache(maxsize=64)
def bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """`(n_out, n_in)` float32 weights of a bicubic resize along one axis, as
    `F.interpolate(mode="bicubic", align_corners=False)`: centres aligned, edges clamped."""
    if n_in == n_out:
        return np.eye(n_in, dtype=np.float32)
    x = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    left = np.floor(x)
    taps = left[:, None] + np.arange(-1, 3)  # [n_out, 4] source positions
    weights = _cubic(x[:, None] - taps)
    matrix = np.zeros((n_out, n_in))
    np.add.at(matrix, (np.arange(n_out)[:, None], np.clip(taps, 0, n_in - 1).astype(np.int64)), weights)
    matrix = matrix.astype(np.float32)
    matrix.flags.writeable = False
    return matrix


def _best_on_kept_grid(scores, image_size: int, width: int, height: int, keep=None):
    """Best score and class on the distinct rows × columns the nearest resize keeps.

    Returns `(top, index, rows, cols)`: `[R, C]` float32 and int64 (-1 where no class
    is kept), and the `(height,)` / `(width,)` positions of each image row / column in them.
    """
    scores = np.asarray(scores, dtype=np.float32)  # [K, h, w]
    kept = np.arange(scores.shape[0]) if keep is None else np.asarray(keep, dtype=np.int64).reshape(-1)
    source_rows, rows = np.unique(nearest_index(image_size, height), return_inverse=True)
    source_cols, cols = np.unique(nearest_index(image_size, width), return_inverse=True)
    if kept.size == 0:
        shape = (len(source_rows), len(source_cols))
        return np.full(shape, -np.inf, np.float32), np.full(shape, -1, np.int64), rows, cols
    k, h, w = len(kept), scores.shape[-2], scores.shape[-1]
    wy = bicubic_matrix(h, image_size)[source_rows]  # [R, h]
    wx = bicubic_matrix(w, image_size)[source_cols]  # [C, w]
    # two plain matrix products (fast BLAS calls): along the columns, then along the rows
    values = scores[kept].reshape(k * h, w) @ wx.T  # [K*h, C]
    values = wy @ values.reshape(k, h, -1).transpose(1, 0, 2).reshape(h, -1)  # [R, K*C]
    values = values.reshape(len(source_rows), k, len(source_cols))  # [R, K, C]
    best = values.argmax(axis=1)  # the first class wins ties
    top = np.take_along_axis(values, best[:, None], axis=1)[:, 0]
    return top, kept[best], rows, cols


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


def labels_from_scores(scores, threshold: float, image_size: int, width: int, height: int) -> np.ndarray:
    """`(K, h, w)` scores → the `(height, width)` label map: 0 background (best score below
    `threshold`), `k + 1` class k; the smallest unsigned dtype that holds K."""
    top, index, rows, cols = _best_on_kept_grid(scores, image_size, width, height)
    labels = np.where(top >= np.float32(threshold), index + 1, 0).astype(label_dtype(len(scores)))
    return labels[rows[:, None], cols[None, :]]

"""Files a run writes: masks and score maps, each written to a temporary name and renamed.

A killed worker therefore never leaves a half-written file under a name a sample points
to: the database is updated only after the rename.
"""

import os
import tempfile

import numpy as np
from PIL import Image


def _atomic_write(path, write):
    """Call `write(tmp_path)` then rename onto `path` (same folder, so the rename is atomic)."""
    path = os.path.abspath(path)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=folder)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def write_mask(path, mask):
    """Write an integer label map as a PNG (8-bit, or 16-bit for more than 255 classes)."""
    mask = np.asarray(mask)
    if mask.max(initial=0) > 65535:
        raise ValueError("a mask with values above 65535 cannot be stored as a PNG")
    image = Image.fromarray(mask.astype(np.uint8 if mask.max(initial=0) < 256 else np.uint16))
    return _atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def save_scores(path, scores, classes):
    """Store `(K, h, w)` score maps compactly (float16) with their class names."""
    scores = np.asarray(scores, dtype=np.float16)
    classes = np.asarray(list(classes), dtype=str)
    if scores.ndim != 3 or scores.shape[0] != len(classes):
        raise ValueError(f"scores of shape {scores.shape} do not match {len(classes)} classes")

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, scores=scores, classes=classes)  # float16 maps barely compress; loads stay fast

    return _atomic_write(path, write)


def load_scores(path):
    """`(scores (K, h, w) float32, classes list[str])` from :func:`save_scores`."""
    with np.load(path, allow_pickle=False) as data:
        return data["scores"].astype(np.float32), [str(c) for c in data["classes"]]

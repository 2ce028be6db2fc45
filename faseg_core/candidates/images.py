"""Images in for the candidate models: the same reading as the segmenter (faseg_core.images)."""

from __future__ import annotations

from PIL import Image

from ..images import as_image_list, load_image


def to_pil_list(images) -> list[Image.Image]:
    """RGB PIL images from one image or a sequence (PIL, uint8 arrays, paths; a 4-D array is a batch)."""
    return [load_image(image, i) for i, image in enumerate(as_image_list(images))]


def batches(items: list, batch_size: int):
    """Consecutive slices of `items` of at most `batch_size`."""
    for start in range(0, len(items), batch_size):
        yield items[start : start + batch_size]

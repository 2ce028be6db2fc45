"""Reading images of any common kind into RGB, and into the tensor the VAE takes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError


class ImageError(ValueError):
    """An input that is not a usable image; the message names it."""


def describe(image, index: int | None = None) -> str:
    """A short name for an input in messages: its path, or its position."""
    if isinstance(image, (str, os.PathLike)):
        return f"image '{os.fspath(image)}'"
    return "image" if index is None else f"image {index}"


def _from_path(path) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image '{path}' does not exist: check the path")
    if path.stat().st_size == 0:
        raise ImageError(f"image '{path}' is an empty (0-byte) file")
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"image '{path}' is not a readable image: {e}") from e
    return image


def _from_array(array: np.ndarray, name: str) -> Image.Image:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ImageError(f"{name} has shape {array.shape}: expected (H, W), (H, W, 3) or (H, W, 4)")
    if array.size == 0:
        raise ImageError(f"{name} is empty (shape {array.shape})")
    if array.dtype == np.uint16:
        array = (array >> 8).astype(np.uint8)
    elif array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif np.issubdtype(array.dtype, np.floating):
        array = (np.clip(np.nan_to_num(array), 0.0, 1.0) * 255).round().astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ImageError(f"{name} has dtype {array.dtype}: expected uint8, uint16, bool or float in [0, 1]")
    return Image.fromarray(np.ascontiguousarray(array))


def to_rgb(image: Image.Image) -> Image.Image:
    """EXIF-upright RGB; 16-bit and float modes are rescaled, alpha is dropped."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        image = Image.fromarray((np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8))
    elif image.mode in ("I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if array.max(initial=0) > 255 else 255.0
        image = Image.fromarray(np.clip(array / top * 255, 0, 255).astype(np.uint8))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image if image.mode == "RGB" else image.convert("RGB")


def load_image(image, index: int | None = None) -> Image.Image:
    """A path, PIL image or array → RGB PIL image.

    Raises:
        ImageError: unreadable, empty or malformed input (the message names it).
        TypeError: an input of another type.
    """
    name = describe(image, index)
    if isinstance(image, (str, os.PathLike)):
        image = _from_path(image)
    elif isinstance(image, np.ndarray):
        image = _from_array(image, name)
    elif torch.is_tensor(image):
        raise TypeError(f"{name} is a torch tensor: pass a PIL image, an (H, W, C) uint8 array or a path")
    elif not isinstance(image, Image.Image):
        raise TypeError(
            f"{name} is a {type(image).__name__}: pass a PIL image, an (H, W, C) uint8 array or a path"
        )
    if image.width < 1 or image.height < 1:
        raise ImageError(f"{name} has no pixels ({image.width}x{image.height})")
    try:
        return to_rgb(image)
    except OSError as e:
        raise ImageError(f"{name} is not a readable image: {e}") from e


def as_image_list(images) -> list:
    """One image or a sequence of images → a list (a 4-D array is a batch)."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images)
    if isinstance(images, (list, tuple)):
        return list(images)
    return [images]


def resized(image: Image.Image | np.ndarray, size: int) -> np.ndarray:
    """An RGB image as the `(size, size, 3)` uint8 array the VAE sees (PIL bicubic resize);
    an array of that shape is taken as already resized."""
    if isinstance(image, np.ndarray) and image.shape == (size, size, 3) and image.dtype == np.uint8:
        return image
    return np.asarray(image.resize((size, size), Image.BICUBIC))


def to_pixels(images: list, size: int, device=None) -> torch.Tensor:
    """RGB images (or `resized` arrays) → `[B, 3, size, size]` float32 in [-1, 1] on `device`.

    The uint8 pixels travel to a CUDA device from pinned memory without blocking the host;
    the scaling runs where they land.
    """
    pixels = torch.from_numpy(np.stack([resized(im, size) for im in images]))  # [B, S, S, 3] uint8
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        pixels = pixels.pin_memory().to(device, non_blocking=True)
    elif device.type != "cpu":
        pixels = pixels.to(device)
    return pixels.permute(0, 3, 1, 2).float() / 127.5 - 1.0

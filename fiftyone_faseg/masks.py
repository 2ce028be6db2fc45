"""Masks as class values, for runs (ground truth classes, sweeps) and evaluations alike.

A mask is turned into a 2-D array of the values its field's ``mask_targets`` name
(:func:`read_mask`):

-   integer masks as they are; boolean masks as 0/1;
-   palette PNGs (``mask_path``, PIL mode ``"P"``, e.g. VOC's ``SegmentationClass``) as
    their palette **indices**, the class values; with RGB hex ``mask_targets`` as their
    colours instead;
-   RGB masks, when the field's ``mask_targets`` are RGB hex strings
    (``{"#800000": "aeroplane", ...}``, as FiftyOne's own evaluation accepts them), as
    ``0xRRGGBB`` integers (:func:`fiftyone_faseg.matching.value_targets` turns the targets the same way).

Anything else raises :class:`MaskError`, whose message says what the mask is and how to
convert it.
"""

import io
import os
import zlib

import numpy as np
from PIL import Image

import fiftyone.core.fields as fof
import fiftyone.core.labels as fol
import fiftyone.core.utils as fou

class MaskError(ValueError):
    """A mask that cannot be read as class values (``missing`` is True when its file
    does not exist)."""

    def __init__(self, message, missing=False):
        super().__init__(message)
        self.missing = missing


def read_mask(label, field, sample_id, rgb=False):
    """The mask of a raw Segmentation document as a 2-D integer array of class values
    (None when it has none).

    Args:
        label: a raw Segmentation document (or None)
        field: the field's name (for messages)
        sample_id: the sample's id (for messages)
        rgb (False): whether the field's ``mask_targets`` are RGB hex strings

    Raises:
        MaskError: if the mask's file is missing or unreadable, or the mask is not one of
            the forms above
    """
    if not label:
        return None
    if label.get("mask") is not None:
        mask = deserialize_mask(label["mask"])
    elif label.get("mask_path"):
        mask = _read_file(label["mask_path"], field, sample_id, rgb)
    else:
        return None
    return class_values(mask, field, sample_id, rgb=rgb)


def segmentation_mask(seg, field, sample_id, rgb=False):
    """:func:`read_mask` of a :class:`fiftyone.core.labels.Segmentation` (None when it has
    no mask): for code that holds label objects (runs reading ground truth, sweeps)."""
    if seg is None:
        return None
    if seg.mask is not None:
        return class_values(seg.mask, field, sample_id, rgb=rgb)
    if seg.mask_path:
        return class_values(_read_file(seg.mask_path, field, sample_id, rgb), field, sample_id, rgb=rgb)
    return None


def class_values(mask, field, sample_id, rgb=False):
    """A decoded mask as a 2-D integer array of class values (see :func:`read_mask`)."""
    mask = np.asarray(mask)
    if mask.dtype == bool:
        mask = mask.view(np.uint8)
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[:, :, 0]
    if mask.ndim == 3 and mask.shape[2] in (3, 4) and mask.dtype == np.uint8:
        if rgb:
            return fof.rgb_array_to_int(mask[:, :, :3])
        raise MaskError(
            "The mask of '%s' of sample %s is an RGB image %s, but the mask_targets of '%s' "
            "are integer class values. Either set RGB hex mask_targets "
            "(dataset.mask_targets['%s'] = {'#800000': 'aeroplane', ...}), or convert the "
            "masks to one class index per pixel (a palette PNG, or a 2-D array mapping each "
            "colour to its class value)" % (field, sample_id, mask.shape, field, field)
        )
    if mask.ndim != 2 or mask.dtype.kind not in "iu":
        raise MaskError(
            "The mask of '%s' of sample %s has shape %s and dtype %s: FA-Seg needs 2-D "
            "masks of integer class values (or RGB masks with hex mask_targets)"
            % (field, sample_id, mask.shape, mask.dtype)
        )
    if rgb:
        raise MaskError(
            "The mask of '%s' of sample %s is a 2-D array of class values, but the "
            "mask_targets of '%s' are RGB hex colours: give the field integer mask_targets "
            "({1: 'aeroplane', ...}) or store RGB masks" % (field, sample_id, field)
        )
    return mask


def _read_file(path, field, sample_id, rgb):
    if not os.path.isfile(path):
        raise MaskError("The mask file of '%s' of sample %s does not exist: %s" % (field, sample_id, path),
                        missing=True)
    try:
        with Image.open(path) as img:
            if img.mode == "P":  # a palette PNG (VOC): the indices are the classes
                return np.asarray(img.convert("RGB") if rgb else img)
            if img.mode in ("1", "L", "I", "I;16", "I;16B", "I;16L", "RGB", "RGBA", "LA"):
                return np.asarray(img.convert("L") if img.mode == "LA" else img)
    except OSError as e:
        raise MaskError("The mask file of '%s' of sample %s cannot be read (%s): %s"
                        % (field, sample_id, e, path)) from None
    return fol.Segmentation(mask_path=path).get_mask()  # other formats: as FiftyOne reads them


_NPY_HEADERS = {}


def deserialize_mask(data):
    """``fiftyone.core.utils.deserialize_numpy_array`` for the masks FiftyOne stores,
    without parsing the same ``.npy`` header again for every mask."""
    raw = zlib.decompress(data)
    if raw[:8] != b"\x93NUMPY\x01\x00":
        return fou.deserialize_numpy_array(data)
    end = 10 + int.from_bytes(raw[8:10], "little")
    header = raw[10:end]
    if header not in _NPY_HEADERS:
        if len(_NPY_HEADERS) > 64:
            _NPY_HEADERS.clear()
        with io.BytesIO(raw) as f:
            np.lib.format.read_magic(f)
            _NPY_HEADERS[header] = np.lib.format.read_array_header_1_0(f)
    shape, fortran_order, dtype = _NPY_HEADERS[header]
    if dtype.hasobject:
        return fou.deserialize_numpy_array(data)
    array = np.frombuffer(raw, dtype=dtype, offset=end, count=int(np.prod(shape)))
    return array.reshape(shape, order="F" if fortran_order else "C")

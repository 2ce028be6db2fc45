"""Reading the masks of an evaluation's samples straight from the database: one streamed
aggregation (small batches), no sample objects built, each mask decoded once."""

import io
import zlib

import numpy as np

import fiftyone.core.labels as fol
import fiftyone.core.utils as fou


READ_BATCH = 128


def iter_docs(samples, gt_field, pred_field, cand_field):
    """The raw documents of the collection's samples (id, both masks, candidate names),
    streamed by the database: nothing is built per sample beyond what is read."""
    project = {}
    for field in (gt_field, pred_field):
        project.update({field + "._id": True, field + ".mask": True, field + ".mask_path": True})
    if cand_field is not None:
        project[cand_field + ".classifications.label"] = True
    cursor = samples._aggregate(post_pipeline=[{"$project": project}])
    # small batches: by default the server sends up to 16 MB of documents at once
    return cursor.batch_size(READ_BATCH) if hasattr(cursor, "batch_size") else cursor


def read_mask(label, field, sample_id):
    """The mask of a raw Segmentation document (None when it has none)."""
    if not label:
        return None
    if label.get("mask") is not None:
        mask = deserialize_mask(label["mask"])
    elif label.get("mask_path"):
        mask = fol.Segmentation(mask_path=label["mask_path"]).get_mask()
    else:
        return None
    if mask.ndim != 2:
        raise ValueError(
            "The mask of '%s' of sample %s has shape %s: FA-Seg evaluation needs "
            "2D masks of integer class values, not RGB masks" % (field, sample_id, mask.shape)
        )
    return mask


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

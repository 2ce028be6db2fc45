"""What FA-Seg stores on samples, and the one place that writes it.

Every sample field a run, a re-threshold or an evaluation writes goes through
:func:`write_samples` (a batch, written now) or :class:`BatchWriter` (many batches, each
written in the background while the next is computed). Both write **one update per
sample carrying all of its fields** (a sample is written whole or not at all), on the
dataset's own samples (every group slice), touching no other field, so concurrent
writers of other fields are never undone.

Values are given as FiftyOne gives them:

-   label objects (:class:`fiftyone.core.labels.Segmentation`, ``Classifications``,
    ``Heatmap``, any FiftyOne document) or plain values: validated and serialized by the
    dataset's schema field, exactly as ``set_values`` does (the public path);
-   or, where building objects costs more than the work itself (each sample of a run,
    each class of an evaluation: measured 1.3-1.7 ms per run sample with objects against
    0.07-0.09 ms), the same documents built directly by :func:`label_doc`,
    :func:`segmentation_doc`, :func:`heatmap_doc`, :func:`classifications_doc` (the fast
    path). ``tests/test_fiftyone_contract.py`` pins that both give the same stored
    document and read back as the same label, for the FiftyOne version range of
    ``pyproject.toml``.

FiftyOne has no public update of several fields of a sample at once (``set_values`` sets
one field of many samples, one bulk write per field, so a crash between two fields would
leave a sample half written); the writes here are what ``set_values`` does, one
``$set`` per sample through ``Dataset._bulk_write`` (pinned by the contract test), with
every field of the sample in it.
"""

import concurrent.futures
import datetime
import io
import zlib

import numpy as np
from bson import ObjectId

import fiftyone.core.odm as foo

HEATMAP_RANGE = (0.0, 255.0)


# ---------------------------------------------------------------------- label documents (fast path)


def label_doc(cls, **fields):
    """A new label document as FiftyOne stores it: ``{"_id", "_cls", "tags", **fields}``,
    with a fresh ``ObjectId`` (unique across processes and time, as FiftyOne makes them)."""
    return {"_id": ObjectId(), "_cls": cls, "tags": [], **fields}


def mask_bytes(mask, level=-1):
    """A mask as FiftyOne stores it (``np.save`` bytes, zlib-compressed: what
    ``fiftyone.core.utils.serialize_numpy_array`` gives at the default ``level``)."""
    with io.BytesIO() as f:
        np.save(f, np.asarray(mask), allow_pickle=False)
        return zlib.compress(f.getvalue(), level)


def segmentation_doc(mask=None, mask_path=None, level=-1, **attributes):
    """The stored document of a :class:`fiftyone.core.labels.Segmentation` with its mask
    in the document (``mask``, compressed at ``level``) or on disk at ``mask_path``."""
    if mask_path:
        return label_doc("Segmentation", mask_path=mask_path, **attributes)
    return label_doc("Segmentation", mask=mask_bytes(mask, level), **attributes)


def heatmap_doc(heatmap=None, map_path=None, range=HEATMAP_RANGE):
    """The stored document of a :class:`fiftyone.core.labels.Heatmap` (``map`` in the
    document, or on disk at ``map_path``)."""
    if map_path:
        return label_doc("Heatmap", map_path=map_path, range=list(range))
    return label_doc("Heatmap", map=mask_bytes(heatmap), range=list(range))


def classification_doc(label, confidence=None, **attributes):
    """The stored document of a :class:`fiftyone.core.labels.Classification`."""
    return label_doc("Classification", label=label, confidence=confidence, **attributes)


def classifications_doc(docs):
    """The stored document of :class:`fiftyone.core.labels.Classifications` of
    :func:`classification_doc` documents."""
    return {"_cls": "Classifications", "classifications": list(docs)}


# ---------------------------------------------------------------------- writes


def sample_updates(dataset, values, now=None, schema=None):
    """``([UpdateOne], [ObjectId])``: one ``$set`` per sample of ``values`` (``{sample id:
    {field: value}}``) with all of its fields and ``last_modified_at``.

    Raises:
        ValueError: a field the dataset's schema lacks, or a value its field rejects
            (nothing is written)
    """
    from pymongo import UpdateOne

    schema = dataset.get_field_schema() if schema is None else schema
    now = now or datetime.datetime.utcnow()
    ops, ids = [], []
    for sample_id, fields in values.items():
        update = {"last_modified_at": now}
        for name, value in fields.items():
            update[name] = _serialize(schema, name, value)
        ids.append(ObjectId(sample_id) if isinstance(sample_id, str) else sample_id)
        ops.append(UpdateOne({"_id": ids[-1]}, {"$set": update}))
    return ops, ids


def write_samples(dataset, values, schema=None):
    """Writes ``values`` (``{sample id: {field: value}}``, see the module's docstring) in
    one bulk write: one update per sample with all of its fields, on the dataset's own
    samples (every group slice). Samples of the dataset in memory see the new values.
    ``schema``: the dataset's field schema, when the caller has it."""
    if not values:
        return
    ops, ids = sample_updates(dataset, values, schema=schema)
    dataset._bulk_write(ops, ids=ids)


def _serialize(schema, name, value):
    """``value`` as stored in field ``name``: documents of :func:`label_doc` and plain values
    as they are; FiftyOne documents validated and serialized by the schema field (as
    ``set_values`` does)."""
    field = schema.get(name)
    if field is None:
        raise ValueError("field '%s' is not declared on the dataset: declare it before writing samples" % name)
    if value is None or isinstance(value, (dict, list, str, int, float, bool, bytes)):
        return value
    try:
        field.validate(value)
    except Exception as e:
        raise ValueError("invalid value for field '%s': %s" % (name, e)) from e
    return field.to_mongo(value)


class BatchWriter(object):
    """Writes per-sample values in batches (one update per sample, as :func:`write_samples`),
    so the memory of a long pass does not grow with the number of samples. A batch is
    written in a background thread while the next one is computed (at most one batch
    waits: memory stays bounded); samples in memory are reloaded once at the end.

    Example usage::

        with BatchWriter(dataset) as writer:
            for sample_id, values in computed:
                writer.set(sample_id, values)

    Args:
        dataset: a :class:`fiftyone.core.dataset.Dataset`
        batch_size (256): samples per bulk write
    """

    def __init__(self, dataset, batch_size=256):
        self._dataset = dataset
        self._schema = None
        self._values = {}
        self._pending = None
        self._pool = None
        self.batch_size = batch_size

    def set(self, sample_id, values):
        """Queues ``values`` (``{field: value}``) for the sample with this id."""
        self._values[sample_id] = values
        if len(self._values) >= self.batch_size:
            self.flush()

    def flush(self, wait=False):
        """Starts writing the queued values (waits for the previous batch first)."""
        self._wait()
        if self._values:
            if self._schema is None:
                self._schema = self._dataset.get_field_schema()
            values, self._values = self._values, {}
            ops, _ = sample_updates(self._dataset, values, schema=self._schema)
            self._pending = self._pool.submit(foo.bulk_write, ops, self._dataset._sample_collection, ordered=False)
        if wait:
            self._wait()

    def _wait(self):
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()  # raises the write's error here

    def __enter__(self):
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="faseg-writer")
        return self

    def __exit__(self, exc_type, *args):
        try:
            if exc_type is None:
                self.flush(wait=True)
            else:
                self._values = {}
                self._pending = None
        finally:
            self._pool.shutdown(wait=True)
            self._dataset.reload()  # samples in memory see the values

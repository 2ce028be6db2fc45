"""The fields, mask_targets, index and saved view an FA-Seg evaluation owns.

Every field it creates carries ``field.info["faseg_eval"] = {"eval_key": ...}``, so FA-Seg
never offers it as ground truth (:func:`fiftyone_faseg.fields.ground_truth_fields`) and a
later run refuses to write into it; deleting or renaming the evaluation deletes or
renames all of them, the error overlay's mask_targets and the ``<eval_key>_worst`` view.
"""

import concurrent.futures
import datetime

from pymongo import UpdateOne

import fiftyone.core.fields as fof
import fiftyone.core.labels as fol
import fiftyone.core.odm as fod
import fiftyone.core.sample as fos

from ..targets import delete_targets, set_targets
from .per_sample import CLASS_ATTRIBUTES, ERROR_ATTRIBUTES, ERROR_TARGETS, PAIR_ATTRIBUTES

INFO_KEY = "faseg_eval"
DEFAULT_WORST_K = 25


def field_names(eval_key, config):
    """``{role: field name}`` of every sample field an evaluation with ``config`` writes
    (FiftyOne's own ``accuracy``/``precision``/``recall``/``dice`` included)."""
    return output_names(eval_key, per_class=getattr(config, "per_class", False),
                        error_masks=getattr(config, "error_masks", False), compute_dice=config.compute_dice)


def output_names(eval_key, per_class=True, error_masks=True, compute_dice=False):
    """``{role: field name}`` of the fields an evaluation with these settings writes."""
    roles = ["accuracy", "precision", "recall", "miou"]
    if compute_dice:
        roles.append("dice")
    if per_class:
        roles += ["classes", "confusions"]
    if error_masks:
        roles.append("errors")
    return {role: "%s_%s" % (eval_key, role) for role in roles}


def worst_view_name(eval_key):
    return "%s_worst" % eval_key


def check_free(dataset, eval_key, names, reads=()):
    """Raises if a field the evaluation would write (``names``, see :func:`output_names`)
    exists and is not this evaluation's own (another evaluation's, a run's, ground
    truth, ...), or is one it reads (``reads``): validate before writing."""
    existing = eval_key in dataset.list_evaluations()
    for name in names.values():
        if name in reads:
            raise ValueError(
                "eval_key '%s' would write into '%s', which the evaluation reads: "
                "choose another eval_key" % (eval_key, name)
            )
        field = dataset.get_field(name)
        if field is None or owner(field) == eval_key:
            continue
        if existing and INFO_KEY not in (field.info or {}):
            continue  # an evaluation made before fields were marked: it is replaced
        raise ValueError(
            "field '%s' exists and does not belong to evaluation '%s'; the evaluation "
            "writes %s: choose another eval_key (or delete that field)"
            % (name, eval_key, sorted(names.values()))
        )


def owner(field):
    """The eval key that created ``field`` (None if no FA-Seg evaluation did)."""
    info = (field.info or {}).get(INFO_KEY)
    return info.get("eval_key") if isinstance(info, dict) else None


def declare_fields(dataset, eval_key, config):
    """Adds every output field (marked as this evaluation's, with the attributes of its
    labels, so the App's sidebar filters them) and the error overlay's mask_targets,
    before any sample is written."""
    info = {INFO_KEY: {"eval_key": eval_key}}
    label_fields = {"classes": fol.Classifications, "errors": fol.Segmentation}
    attributes = {"classes": CLASS_ATTRIBUTES, "confusions": PAIR_ATTRIBUTES, "errors": ERROR_ATTRIBUTES}
    prefixes = {"classes": ".classifications.", "confusions": ".", "errors": "."}
    types = {int: fof.IntField, bool: fof.BooleanField, str: fof.StringField, float: fof.FloatField}
    schema = {}
    for role, name in field_names(eval_key, config).items():
        if role in label_fields:
            schema[name] = fof.EmbeddedDocumentField(label_fields[role], info=info)
        elif role == "confusions":
            schema[name] = fof.ListField(fof.EmbeddedDocumentField(fod.DynamicEmbeddedDocument), info=info)
        else:
            schema[name] = fof.FloatField(info=info)
        if role in attributes:
            schema.update({name + prefixes[role] + a: types[t]() for a, t in attributes[role].items()})
        if dataset.has_sample_field(name):
            _mark(dataset, name, info)  # a field left by an evaluation made before fields were marked
    # one schema update for every field and attribute (add_sample_field reloads the dataset each time)
    dataset.add_dynamic_sample_fields(fields=schema)
    if "errors" in field_names(eval_key, config):
        set_targets(dataset, field_names(eval_key, config)["errors"], ERROR_TARGETS)


class SampleWriter(object):
    """Writes per-sample values in batches of ``$set`` updates (one update per sample),
    so an evaluation's memory does not grow with the number of samples. A batch is
    written in a background thread while the next one is computed (at most one batch
    waits: memory stays bounded).

    Args:
        dataset: a :class:`fiftyone.core.dataset.Dataset`
        batch_size (256): samples per bulk write
    """

    def __init__(self, dataset, batch_size=256):
        self._dataset = dataset
        self._ops = []
        self._pending = None
        self._pool = None
        self.batch_size = batch_size

    def set(self, sample_id, values):
        """Queues ``values`` (``{field: database value}``) for the sample with this ``_id``."""
        values = dict(values, last_modified_at=datetime.datetime.utcnow())
        self._ops.append(UpdateOne({"_id": sample_id}, {"$set": values}))
        if len(self._ops) >= self.batch_size:
            self.flush()

    def flush(self, wait=False):
        """Starts writing the queued updates (waits for the previous batch first)."""
        self._wait()
        if self._ops:
            ops, self._ops = self._ops, []
            self._pending = self._pool.submit(self._dataset._sample_collection.bulk_write, ops, ordered=False)
        if wait:
            self._wait()

    def _wait(self):
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()  # raises the write's error here

    def __enter__(self):
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="faseg-eval-writer")
        return self

    def __exit__(self, exc_type, *args):
        try:
            if exc_type is None:
                self.flush(wait=True)
            else:
                self._ops = []
                self._pending = None
        finally:
            self._pool.shutdown(wait=True)
            fos.Sample._reload_docs(self._dataset._sample_collection_name)  # samples in memory see the values


def finish_fields(samples, eval_key, config, worst_k=DEFAULT_WORST_K):
    """After the samples are written: the index that makes ``<eval_key>_miou`` sortable
    in the App's grid and the saved view of the worst samples."""
    dataset = samples._dataset
    field = field_names(eval_key, config)["miou"]
    dataset.create_index(field)
    view = samples.exists(field).sort_by(field)
    if worst_k:
        view = view.limit(worst_k)
    dataset.save_view(
        worst_view_name(eval_key),
        view,
        description="Samples of lowest mIoU in evaluation '%s', worst first" % eval_key,
        overwrite=True,
    )


def delete_outputs(dataset, eval_key, config):
    """Deletes every field, the mask_targets and the saved view of an evaluation."""
    names = list(field_names(eval_key, config).values())
    dataset.delete_sample_fields([n for n in names if dataset.has_sample_field(n)])
    if "errors" in field_names(eval_key, config):
        delete_targets(dataset, field_names(eval_key, config)["errors"])
    if dataset.has_saved_view(worst_view_name(eval_key)):
        dataset.delete_saved_view(worst_view_name(eval_key))


def rename_outputs(dataset, eval_key, new_eval_key, config):
    """Renames every field of an evaluation (and its mark, mask_targets, saved view)."""
    old = field_names(eval_key, config)
    new = field_names(new_eval_key, config)
    pairs = {old[r]: new[r] for r in old if dataset.has_sample_field(old[r])}
    if pairs:
        dataset.rename_sample_fields(pairs)
        dataset.reload()  # renamed field objects keep their old path until reloaded
    for name in pairs.values():
        _mark(dataset, name, {INFO_KEY: {"eval_key": new_eval_key}})
    if "miou" in old and dataset.has_sample_field(new["miou"]):
        _drop_index(dataset, old["miou"])
        dataset.create_index(new["miou"])
    if "errors" in old:
        delete_targets(dataset, old["errors"])
        if dataset.has_sample_field(new["errors"]):
            set_targets(dataset, new["errors"], ERROR_TARGETS)
    if dataset.has_saved_view(worst_view_name(eval_key)):
        view = dataset.load_saved_view(worst_view_name(eval_key))
        dataset.delete_saved_view(worst_view_name(eval_key))
        worst_k = _limit(view)
        finish_fields(dataset, new_eval_key, config, worst_k=worst_k)


def _mark(dataset, name, info):
    field = dataset.get_field(name)
    field.info = {**(field.info or {}), **info}
    field.save()


def _drop_index(dataset, name):
    if name in dataset.list_indexes():
        dataset.drop_index(name)


def _limit(view):
    for stage in view._stages:
        if type(stage).__name__ == "Limit":
            return stage.limit
    return None

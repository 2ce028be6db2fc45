"""The fields, mask_targets, index and saved view an FA-Seg evaluation owns: owned by
record, not by name.

Every field it creates carries ``field.info["faseg_eval"] = {"eval_key": ...}``, so FA-Seg
never offers it as ground truth (:func:`fiftyone_faseg.fields.ground_truth_fields`) and a
later run refuses to write into it; the evaluation's config records the names of every
output it made (``outputs``, ``worst_view``, ``indexes``: :func:`owned`). An evaluation
creates an output only if its name is free or already this key's (:func:`check_free`,
before any change); deleting or renaming the evaluation touches only what its record
names and its marks confirm, so a user's own ``<key>_errors`` field or ``<key>_worst``
view is never replaced, renamed or deleted.
"""

import logging
import warnings

import fiftyone.core.fields as fof
import fiftyone.core.labels as fol
import fiftyone.core.odm as fod

from ..run.targets import delete_targets, set_targets
from ..store import BatchWriter
from .per_sample import CLASS_ATTRIBUTES, ERROR_ATTRIBUTES, ERROR_TARGETS, PAIR_ATTRIBUTES

logger = logging.getLogger(__name__)

INFO_KEY = "faseg_eval"
DEFAULT_WORST_K = 25
SampleWriter = BatchWriter  # the evaluation's per-sample writes (fiftyone_faseg.store)


def field_names(eval_key, config):
    """``{role: field name}`` of every sample field an evaluation with ``config`` writes
    under ``eval_key`` (FiftyOne's own ``accuracy``/``precision``/``recall``/``dice``
    included)."""
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


def owned(eval_key, config):
    """What the evaluation recorded as its own: ``{"fields": {role: name}, "worst_view":
    name or None, "indexes": [names]}`` (records made before outputs were recorded own
    the names their key and settings give)."""
    fields = getattr(config, "outputs", None)
    if fields is None:
        fields = field_names(eval_key, config)
    view = getattr(config, "worst_view", worst_view_name(eval_key))
    indexes = getattr(config, "indexes", None)
    if indexes is None:
        indexes = [fields["miou"]] if "miou" in fields else []
    return {"fields": dict(fields), "worst_view": view, "indexes": list(indexes)}


def record(config, fields, worst_view, indexes):
    """Writes into ``config`` the outputs the evaluation owns (saved with the run)."""
    config.outputs = dict(fields)
    config.worst_view = worst_view
    config.indexes = list(indexes)


def _registered_config(dataset, eval_key):
    if eval_key not in dataset.list_evaluations():
        return None
    try:
        config = dataset.get_evaluation_info(eval_key).config
    except Exception:  # a record this FiftyOne cannot read: it owns nothing we can name
        return None
    return config if getattr(config, "method", None) == "faseg" else None


def is_owned(dataset, eval_key, name, config=None):
    """Whether sample field ``name`` belongs to evaluation ``eval_key``: marked as its own,
    or (made before fields were marked) unmarked and named in its record."""
    field = dataset.get_field(name)
    if field is None:
        return False
    if owner(field) is not None:
        return owner(field) == eval_key
    if INFO_KEY in (field.info or {}):
        return False
    config = config if config is not None else _registered_config(dataset, eval_key)
    return config is not None and name in owned(eval_key, config)["fields"].values()


def check_free(dataset, eval_key, names, reads=(), view=True):
    """Raises, before any change, if an output the evaluation would create is taken by
    something that is not this evaluation's own: a field (``names``, see
    :func:`output_names`), one it reads (``reads``), the mask_targets of its error
    overlay, or its saved view (``view``: True for :func:`worst_view_name`, or a name, or
    None). The message names what collides and what to do."""
    if view is True:
        view = worst_view_name(eval_key)
    config = _registered_config(dataset, eval_key)
    mine = owned(eval_key, config) if config is not None else None
    for role, name in names.items():
        if name in reads:
            raise ValueError(
                "eval_key '%s' would write into '%s', which the evaluation reads: "
                "choose another eval_key" % (eval_key, name)
            )
        if dataset.has_field(name) and not is_owned(dataset, eval_key, name, config):
            raise ValueError(
                "field '%s' exists and does not belong to evaluation '%s'; the evaluation "
                "writes %s: choose another eval_key (or delete that field)"
                % (name, eval_key, sorted(names.values()))
            )
        if role == "errors" and name in (dataset.mask_targets or {}) and not is_owned(dataset, eval_key, name, config):
            raise ValueError(
                "dataset.mask_targets['%s'] exists and does not belong to evaluation '%s', "
                "which would write its error overlay there: choose another eval_key (or "
                "delete those mask_targets)" % (name, eval_key)
            )
    if view and dataset.has_saved_view(view) and (mine is None or mine["worst_view"] != view):
        raise ValueError(
            "saved view '%s' exists and does not belong to evaluation '%s', which saves "
            "its worst samples there: choose another eval_key, or rename or delete that "
            "saved view" % (view, eval_key)
        )


def owner(field):
    """The eval key that created ``field`` (None if no FA-Seg evaluation did)."""
    info = (field.info or {}).get(INFO_KEY)
    return info.get("eval_key") if isinstance(info, dict) else None


# What the App shows for a per-sample number: mIoU in percent, as every FA-Seg view shows
# it; FiftyOne's own accuracy/precision/recall as FiftyOne defines them
FIELD_DESCRIPTIONS = {
    "miou": "The sample's mIoU in percent (0-100), as the FA-Seg panel shows mIoU",
    "accuracy": "FiftyOne's per-sample pixel accuracy (0-1)",
    "precision": "FiftyOne's per-sample precision (0-1)",
    "recall": "FiftyOne's per-sample recall (0-1)",
    "dice": "FiftyOne's per-sample Dice coefficient (0-1)",
}


def declare_fields(dataset, eval_key, config):
    """Adds every output field (marked as this evaluation's, with the attributes of its
    labels, so the App's sidebar filters them) and the error overlay's mask_targets,
    before any sample is written. Call :func:`check_free` first."""
    names = field_names(eval_key, config)
    info = {INFO_KEY: {"eval_key": eval_key}}
    label_fields = {"classes": fol.Classifications, "errors": fol.Segmentation}
    attributes = {"classes": CLASS_ATTRIBUTES, "confusions": PAIR_ATTRIBUTES, "errors": ERROR_ATTRIBUTES}
    prefixes = {"classes": ".classifications.", "confusions": ".", "errors": "."}
    types = {int: fof.IntField, bool: fof.BooleanField, str: fof.StringField, float: fof.FloatField}
    schema = {}
    for role, name in names.items():
        if role in label_fields:
            schema[name] = fof.EmbeddedDocumentField(label_fields[role], info=info)
        elif role == "confusions":
            schema[name] = fof.ListField(fof.EmbeddedDocumentField(fod.DynamicEmbeddedDocument), info=info)
        else:
            schema[name] = fof.FloatField(info=info, description=FIELD_DESCRIPTIONS.get(role))
        if role in attributes:
            schema.update({name + prefixes[role] + a: types[t]() for a, t in attributes[role].items()})
        if dataset.has_sample_field(name):
            _mark(dataset, name, info)  # this key's own, left by a run that did not finish
    # one schema update for every field and attribute (add_sample_field reloads the dataset each time)
    dataset.add_dynamic_sample_fields(fields=schema)
    if "errors" in names:
        set_targets(dataset, names["errors"], ERROR_TARGETS)


def finish_fields(samples, eval_key, config, worst_k=DEFAULT_WORST_K):
    """After the samples are written: the index that makes ``<eval_key>_miou`` sortable
    in the App's grid and the saved view of the worst samples; records them, with the
    fields, in ``config`` (:func:`record`)."""
    dataset = samples._dataset
    fields = field_names(eval_key, config)
    field = fields["miou"]
    indexes = [dataset.create_index(field)]  # on a field of its own: its own
    _save_worst(samples, eval_key, field, worst_k)
    record(config, fields, worst_view_name(eval_key), indexes)


def _save_worst(samples, eval_key, field, worst_k):
    view = samples.exists(field).sort_by(field)
    if worst_k:
        view = view.limit(worst_k)
    samples._dataset.save_view(
        worst_view_name(eval_key),
        view,
        description="Samples of lowest mIoU in evaluation '%s', worst first" % eval_key,
        overwrite=True,
    )


def delete_outputs(dataset, eval_key, config):
    """Deletes what the evaluation owns (:func:`owned`, confirmed by the fields' marks):
    its fields, their indexes, the error overlay's mask_targets and its saved view;
    nothing else of the same names."""
    mine = owned(eval_key, config)
    fields = {r: n for r, n in mine["fields"].items() if is_owned(dataset, eval_key, n, config)}
    for name in mine["indexes"]:
        if name in fields.values() and name in dataset.list_indexes():
            dataset.drop_index(name)
    if fields:
        dataset.delete_sample_fields(list(fields.values()))
    if "errors" in fields:
        delete_targets(dataset, fields["errors"])
    if mine["worst_view"] and dataset.has_saved_view(mine["worst_view"]):
        dataset.delete_saved_view(mine["worst_view"])


def rename_outputs(samples, eval_key, new_eval_key, config):
    """Renames what the evaluation owns to ``new_eval_key``'s names, all or nothing.

    FiftyOne renames the key whatever this does, so when a new name is taken by
    something else (a user's ``<new_key>_errors`` field or ``<new_key>_worst`` view),
    nothing is renamed: the outputs keep their names, stay recorded as the renamed key's
    own (deleting it deletes them, and only them) and a warning names the collision.
    ``config`` is updated with what the key owns after the rename; save it.
    """
    dataset = samples._dataset
    mine = owned(eval_key, config)
    fields = {r: n for r, n in mine["fields"].items() if is_owned(dataset, eval_key, n, config)}
    new_fields = {r: "%s_%s" % (new_eval_key, r) for r in fields}
    new_view = worst_view_name(new_eval_key) if mine["worst_view"] else None
    taken = [n for n in new_fields.values() if dataset.has_field(n)]
    taken += ["mask_targets['%s']" % new_fields[r] for r in ("errors",) if r in new_fields
              and new_fields[r] in (dataset.mask_targets or {})]
    if new_view and dataset.has_saved_view(new_view):
        taken.append("saved view '%s'" % new_view)
    info = {INFO_KEY: {"eval_key": new_eval_key}}
    if taken:
        msg = ("Evaluation '%s' is renamed '%s', but its outputs keep their names %s because %s "
               "already exist and are not its own; they stay the evaluation's (deleting it deletes "
               "them, not those). Rename or delete %s and rename the evaluation again to rename them"
               % (eval_key, new_eval_key, sorted(fields.values()), taken, taken))
        logger.warning(msg)
        warnings.warn(msg)
        for name in fields.values():
            _mark(dataset, name, info)
        record(config, fields, mine["worst_view"], mine["indexes"])
        return

    pairs = _move_fields(dataset, fields, new_fields, new_eval_key)
    indexes = []
    for name in mine["indexes"]:
        if name in pairs and name in dataset.list_indexes():
            dataset.drop_index(name)
            indexes.append(dataset.create_index(pairs[name]))
    view = None
    if mine["worst_view"] and dataset.has_saved_view(mine["worst_view"]) and "miou" in new_fields:
        dataset.delete_saved_view(mine["worst_view"])
        _save_worst(samples, new_eval_key, new_fields["miou"], getattr(config, "worst_k", DEFAULT_WORST_K))
        view = new_view
    record(config, {r: pairs.get(n, n) for r, n in mine["fields"].items()}, view, indexes)


def working_key(dataset, eval_key):
    """The key whose names a run replacing evaluation ``eval_key`` writes under until it is
    complete (:func:`take_names`); refused if another evaluation is registered under it."""
    key = "%s__next" % eval_key
    if key in dataset.list_evaluations():
        raise ValueError(
            "evaluation '%s' cannot be run again while an evaluation '%s' exists: the new run "
            "writes under that name until it replaces the old one. Rename or delete '%s'"
            % (eval_key, key, key)
        )
    return key


def take_names(dataset, work_key, eval_key, config):
    """Gives the fields and overlay mask_targets a run wrote under ``work_key`` the names of
    ``eval_key`` (free by then: the run they replace was deleted)."""
    fields = {r: n for r, n in field_names(work_key, config).items() if is_owned(dataset, work_key, n, config)}
    new_fields = field_names(eval_key, config)
    taken = sorted(new_fields[r] for r in fields if dataset.has_field(new_fields[r]))
    if taken:
        raise ValueError("evaluation '%s' cannot take the names %s: fields of those names exist and "
                         "are not its own" % (eval_key, taken))
    _move_fields(dataset, fields, new_fields, eval_key)


def _move_fields(dataset, fields, new_fields, new_eval_key):
    """Renames the ``{role: name}`` ``fields`` to ``new_fields``' names, marks them as
    ``new_eval_key``'s and moves the error overlay's mask_targets: ``{old: new}`` names."""
    pairs = {fields[r]: new_fields[r] for r in fields}
    if pairs:
        dataset.rename_sample_fields(pairs)
        dataset.reload()  # renamed field objects keep their old path until reloaded
    info = {INFO_KEY: {"eval_key": new_eval_key}}
    for name in pairs.values():
        _mark(dataset, name, info)
    if "errors" in fields:
        delete_targets(dataset, fields["errors"])
        set_targets(dataset, new_fields["errors"], ERROR_TARGETS)
    return pairs


def _mark(dataset, name, info):
    field = dataset.get_field(name)
    field.info = {**(field.info or {}), **info}
    field.save()


"""What a run checks before its first write (:func:`fiftyone_faseg.run.plan.plan_run` calls
these), and the queries of what a field already holds that those checks and a run's end use.

A run refuses clearly before touching anything rather than half-do:

-   the collection is a plain image collection (not patches, frames, clips or groups);
-   every setting is valid (the :class:`faseg_core.FASegConfig` it builds, the folders);
-   the label field is a new name, or a field an FA-Seg run made (its record says so),
    with side fields of the right types; never the ground truth, a caption or classes
    field, a dotted path or a field of another label type;
-   existing labels are judged on the dataset, never on the view passed (a view may hide
    the field); without ``overwrite`` or ``skip_existing`` none may exist; a resumed run
    must use the settings the field's masks were made with;
-   the class names exist, and (:func:`fiftyone_faseg.run.plan.check_model`) each fits a
    CLIP prompt.

The App's forms show the same problems (:func:`label_field_problem`, :func:`model_path_problem`).
"""

import os
import re

import fiftyone as fo
import fiftyone.core.fields as fof
import fiftyone.core.labels as fol

from . import classes as fcl
from . import targets as ftg
from ..constants import MODEL_COMPONENTS
from ..fields import heatmap_field, scores_field, side_fields, validate_segmentation_field
from .parts import WritePolicy
from .settings import RUN_ATTR, RunRecord

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # "owner/name" (no leading "/", ".", "~")
_RESERVED = {"id", "filepath", "tags", "metadata", "created_at", "last_modified_at", "media_type", "frames",
             "group"}
_QUERY_CHUNK = 10000



def check_collection(samples):
    kind = None
    if samples._is_patches:
        kind = "a patches view"
    elif samples._is_frames:
        kind = "a frames view"
    elif samples._is_clips:
        kind = "a clips view"
    elif samples._is_dynamic_groups:
        kind = "a dynamic groups view"
    elif samples._is_generated:
        kind = "a generated view"
    elif samples.media_type != fo.core.media.IMAGE:
        kind = "a collection of media type '%s'" % samples.media_type
    if kind:
        raise ValueError(
            "FA-Seg writes image samples, and this is %s: run it on the image dataset (or a view of it, e.g. "
            "dataset.select_group_slices(media_type='image') for groups)" % kind
        )


def check_field_name(name, what="label_field"):
    """A field name FA-Seg may create: letters, digits and underscores (also a safe folder name)."""
    if not isinstance(name, str) or not _NAME.match(name) or name in _RESERVED:
        raise ValueError(
            "`%s` %r is not a name FA-Seg can write: use letters, digits and underscores, starting with a "
            "letter, no dots (not a nested path) and not one of %s" % (what, name, sorted(_RESERVED))
        )


def model_path_problem(value):
    """Why ``value`` cannot name an SD-1.x checkpoint (None when it can): an existing folder
    must hold its components, anything else must look like a Hub id (``owner/name``)."""
    if not value:
        return None
    value = str(value).strip()
    path = os.path.expanduser(value)
    if os.path.isdir(path):
        missing = [c + "/" for c in MODEL_COMPONENTS if not os.path.isdir(os.path.join(path, c))]
        if missing:
            return "'%s' is not an SD-1.x checkpoint folder: it lacks %s" % (value, ", ".join(missing))
        return None
    if os.path.exists(path):
        return "'%s' is a file: give the checkpoint folder (with %s/)" % (value, "/, ".join(MODEL_COMPONENTS))
    if _HUB_ID.match(value):
        return None
    return ("'%s' is neither an existing folder nor a Hugging Face Hub id (owner/name): "
            "give a local folder with %s/, or a Hub id" % (value, "/, ".join(MODEL_COMPONENTS)))


def label_field_problem(dataset, name):
    """Why FA-Seg must not write into field ``name`` of ``dataset`` (None when it may): a
    dotted or odd name, a field of another type, or a field no FA-Seg run made (ground
    truth, another model's predictions). The App's forms show the same problems."""
    if not name:
        return "Name the field to write"
    if "." in name:
        return "'%s' is an embedded path: FA-Seg writes top-level fields (e.g. 'faseg')" % name
    if not _NAME.match(name):
        return "'%s' is not a field name: use letters, digits and _ (starting with a letter)" % name
    field = dataset.get_field(name)
    if field is None:
        return None
    if not (isinstance(field, fof.EmbeddedDocumentField) and issubclass(field.document_type, fol.Segmentation)):
        kind = getattr(field, "document_type", None) or type(field)
        return "'%s' holds %s values, not FA-Seg masks: choose a new field name" % (name, kind.__name__)
    if RunRecord.read(dataset, name) is None:
        return ("'%s' was not written by FA-Seg (ground truth or another model's labels): "
                "choose a new field name" % name)
    return None


def check_fields(dataset, settings):
    label_field, source = settings.output.label_field, settings.classes
    check_field_name(label_field)
    problem = label_field_problem(dataset, label_field)
    if problem:
        raise ValueError("`label_field` %s" % problem)
    schema = dataset.get_field_schema()
    caption = settings.prompt.caption_field
    others = {"gt_field": source.gt_field, "caption_field": caption, "classes_field": source.classes_field}
    for what, name in others.items():
        if name == label_field:
            raise ValueError("`label_field` %r is also the %s: FA-Seg never writes into its inputs; choose "
                             "another label_field" % (label_field, what))
    record = RunRecord.read(dataset, label_field)
    for name, (kind, doc_type) in side_fields(label_field).items():
        fld = schema.get(name)
        if fld is None:
            continue
        if record is None:
            raise ValueError(
                "field '%s' of dataset '%s' exists and no FA-Seg run made '%s' (it may be ground truth or "
                "yours): choose another label_field" % (name, dataset.name, label_field)
            )
        ok = isinstance(fld, kind) and (doc_type is None or issubclass(fld.document_type, doc_type))
        if not ok:
            raise ValueError("field '%s' is a %s, not what FA-Seg writes there (%s): choose another label_field"
                             % (name, _describe(fld), (doc_type or kind).__name__))
    if source.gt_field:
        validate_segmentation_field(dataset, source.gt_field)
        if source.kind in ("mask_targets", "gt_field"):
            fcl.gt_classes(dataset, source.gt_field)  # raises without mask_targets
    if caption:
        fld = schema.get(caption)
        if not isinstance(fld, fof.StringField):
            raise ValueError("`caption_field` '%s' is %s: pass a string field of captions"
                             % (caption, "absent" if fld is None else "a " + _describe(fld)))
    if source.classes_field and source.classes_field not in schema:
        raise ValueError("`classes_field` '%s' is not a field of dataset '%s'" % (source.classes_field, dataset.name))


def _describe(fld):
    doc_type = getattr(fld, "document_type", None)
    return doc_type.__name__ if doc_type is not None else type(fld).__name__


def check_folders(settings):
    output_dir = settings.output.output_dir
    if output_dir:
        folder = os.path.abspath(os.path.expanduser(output_dir))
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise ValueError("`output_dir` '%s' is a file: choose a folder" % output_dir)
        existing = folder
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.access(existing, os.W_OK):
            raise ValueError("`output_dir` '%s' is not writable (no write access to '%s')"
                             % (output_dir, existing))
    problem = model_path_problem(settings.model.model_path)
    if problem:
        raise ValueError("`model_path` %s" % problem)


def check_existing(dataset, ids, settings, record):
    """``(ids to process, ids skipped, the run's started record)``, judged on the dataset;
    raises when a run would replace labels it was not asked to replace, or mix settings
    within one field."""
    label_field, write = settings.output.label_field, settings.write
    if label_field not in dataset.get_field_schema():
        return ids, [], record.started(None, False)
    labelled = set(existing_ids(dataset, ids, label_field))
    if labelled and write is WritePolicy.NEW:
        raise ValueError(
            "field '%s' already has labels on %d of these samples: pass overwrite=True to replace them or "
            "skip_existing=True to process only the others" % (label_field, len(labelled))
        )
    old = RunRecord.read(dataset, label_field)
    differences = old.differences(record) if old is not None else {}
    if differences:
        kept = dataset._sample_collection.count_documents({label_field: {"$ne": None}})
        if write is WritePolicy.OVERWRITE:
            kept -= len(labelled)
        if kept:
            diff = ", ".join("%s=%r (asked %r)" % (k, a, b) for k, (a, b) in differences.items())
            raise ValueError(
                "%d samples of '%s' were made with %s: use the same settings, write to a new label_field, or "
                "overwrite every sample of the field" % (kept, label_field, diff)
            )
    record = record.started(old, bool(write is WritePolicy.OVERWRITE and labelled and differences))
    if write is not WritePolicy.SKIP_EXISTING:
        return ids, [], record
    # a pending overwrite is finished: labels its run did not write yet are redone
    run_id = record.run_id if record.pending else None
    complete = set(complete_ids(dataset, [i for i in ids if i in labelled], settings.output, run_id))
    return [i for i in ids if i not in complete], [i for i in ids if i in complete], record


def check_kept(dataset, settings, names):
    output = settings.output
    if not output.keep_classes:
        return
    known = set(names) | set(ftg.read_targets(dataset, output.label_field).values())
    unknown = [c for c in output.keep_classes if c not in known]
    if unknown:
        raise ValueError("`keep_classes` %s are not classes of this run (%s): choose among those"
                         % (unknown, sorted(known)))


def _object_ids(ids):
    from bson import ObjectId

    return [ObjectId(i) for i in ids]


def existing_ids(dataset, ids, field_name):
    """The ids among ``ids`` whose sample has ``field_name`` set, read from the dataset."""
    coll = dataset._sample_collection
    found = []
    for start in range(0, len(ids), _QUERY_CHUNK):
        chunk = _object_ids(ids[start : start + _QUERY_CHUNK])
        found.extend(str(d["_id"]) for d in coll.find({"_id": {"$in": chunk}, field_name: {"$ne": None}}, {"_id": 1}))
    return found


def complete_ids(dataset, ids, output, run_id=None):
    """The ids among ``ids`` whose sample has everything a run writes with ``output`` (its
    :class:`fiftyone_faseg.run.settings.OutputSpec`): the label (made by the write
    ``run_id`` when given), its mask file when on disk, and the stored scores and heatmap
    (with its file) it asks for."""
    label_field = output.label_field
    heatmap = heatmap_field(label_field)
    projection = {label_field + ".mask_path": 1, label_field + "." + RUN_ATTR: 1, scores_field(label_field): 1,
                  heatmap + ".map_path": 1, heatmap + "._id": 1}
    coll = dataset._sample_collection
    complete = []
    for start in range(0, len(ids), _QUERY_CHUNK):
        for doc in coll.find({"_id": {"$in": _object_ids(ids[start : start + _QUERY_CHUNK])}}, projection):
            label = doc.get(label_field) or {}
            mask_path = label.get("mask_path")
            scores = doc.get(scores_field(label_field))
            heat = doc.get(heatmap)
            ok = (mask_path is None or os.path.isfile(mask_path)) and (
                not output.store_scores or (scores and os.path.isfile(scores))) and (
                not output.heatmap or (heat is not None and (
                    not heat.get("map_path") or os.path.isfile(heat["map_path"])))) and (
                run_id is None or label.get(RUN_ATTR) == run_id)
            if ok:
                complete.append(str(doc["_id"]))
    return complete


# ---------------------------------------------------------------------- what a field holds


def labelled_ids(dataset, field_name):
    """Ids of every sample of the dataset (every group slice) with ``field_name`` set."""
    return [str(d["_id"]) for d in dataset._sample_collection.find({field_name: {"$ne": None}}, {"_id": 1})]


def stale_labels(dataset, field_name, run_id):
    """How many labels of ``field_name`` (every sample of the dataset, every group slice)
    another write than ``run_id`` made."""
    return dataset._sample_collection.count_documents(
        {field_name: {"$ne": None}, field_name + "." + RUN_ATTR: {"$ne": run_id}})

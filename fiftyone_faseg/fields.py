"""Reading Segmentation fields and their mask_targets, shared by runs and evaluations."""

import fiftyone.core.fields as fof
import fiftyone.core.labels as fol

from .masks import MaskError, segmentation_mask


# What a run writes beside ``<label_field>``: the one place that knows the suffixes
SIDE_SUFFIXES = {
    "candidates": "_candidates",
    "caption": "_caption",
    "error": "_error",
    "scores": "_scores",
    "heatmap": "_heatmap",
}


def side_field_names(label_field):
    """``{kind: field name}`` of every side field a run of ``label_field`` writes (kinds:
    ``candidates``, ``caption``, ``error``, ``scores``, ``heatmap``)."""
    return {kind: label_field + suffix for kind, suffix in SIDE_SUFFIXES.items()}


def side_fields(label_field):
    """``{field name: (kind, document type)}`` of everything a run of ``label_field``
    writes, the label field first."""
    return {
        label_field: (fof.EmbeddedDocumentField, fol.Segmentation),
        candidates_field(label_field): (fof.EmbeddedDocumentField, fol.Classifications),
        caption_field(label_field): (fof.StringField, None),
        error_field(label_field): (fof.StringField, None),
        scores_field(label_field): (fof.StringField, None),
        heatmap_field(label_field): (fof.EmbeddedDocumentField, fol.Heatmap),
    }


def candidates_field(label_field):
    """The field holding a run's per-sample candidate classes."""
    return label_field + SIDE_SUFFIXES["candidates"]


def caption_field(label_field):
    """The field holding the caption each sample's prompt used (None without one)."""
    return label_field + SIDE_SUFFIXES["caption"]


def error_field(label_field):
    """The field holding why a sample has no mask (None when it has one)."""
    return label_field + SIDE_SUFFIXES["error"]


def scores_field(label_field):
    """The field holding the paths of a run's stored score maps."""
    return label_field + SIDE_SUFFIXES["scores"]


def heatmap_field(label_field):
    """The field holding the Heatmap of each sample's top class score."""
    return label_field + SIDE_SUFFIXES["heatmap"]


def validate_segmentation_field(samples, field_name):
    field = samples.get_field(field_name)
    if not (
        isinstance(field, fof.EmbeddedDocumentField)
        and issubclass(field.document_type, fol.Segmentation)
    ):
        kind = "absent" if field is None else "a %s" % type(field).__name__
        raise ValueError(
            "field '%s' is not a Segmentation field of dataset '%s' (it is %s); "
            "Segmentation fields: %s"
            % (
                field_name,
                samples._dataset.name,
                kind,
                sorted(samples.get_field_schema(embedded_doc_type=fol.Segmentation)),
            )
        )


def get_mask_targets(samples, field_name):
    targets = samples.mask_targets.get(field_name) or samples.default_mask_targets
    if not targets:
        raise ValueError(
            "no mask_targets for '%s': classes are matched by name, so set "
            "dataset.mask_targets['%s'] = {1: 'cat', 2: 'dog', ...} (or "
            "dataset.default_mask_targets) and call dataset.save()"
            % (field_name, field_name)
        )

    return targets


def int_targets(targets, which):
    if fof.is_rgb_mask_targets(targets):
        raise ValueError(
            "The %s mask_targets use RGB colors %s: FA-Seg reads this field's classes from "
            "integer pixel values; give it integer mask_targets ({1: 'cat', ...}) and masks of "
            "class indices (or palette PNGs)" % (which, sorted(targets)[:3])
        )

    return {int(k): v for k, v in targets.items()}


def label_mask(seg, field_name, sample_id, rgb=False):
    """The mask of a Segmentation as a 2-D array of class values (palette PNGs as their
    indices, boolean masks as 0/1; see :func:`fiftyone_faseg.masks.segmentation_mask`)."""
    mask = segmentation_mask(seg, field_name, sample_id, rgb=rgb)
    if mask is None:
        raise MaskError("'%s' of sample %s has no mask (neither `mask` nor `mask_path`)" % (field_name, sample_id))
    return mask


# Keys in a field's ``info`` that mark it as written by FA-Seg: a run's label field
# ("faseg", see fiftyone_faseg.run.settings.RunRecord) or an evaluation's output ("faseg_eval").
WRITER_INFO_KEYS = ("faseg", "faseg_eval")


def written_by_faseg(dataset, field_name):
    """Whether FA-Seg (a run, re-threshold or evaluation) created ``field_name``."""
    field = dataset.get_field(field_name)
    info = (field.info or {}) if field is not None else {}
    return any(key in info for key in WRITER_INFO_KEYS)


# The attribute of each label :class:`fiftyone_faseg.FASegModel` makes (through
# ``apply_model``, which creates the field without FA-Seg's ``info``): its model path
MODEL_ATTR = "faseg_model"


def made_by_faseg_model(dataset, field_name):
    """Whether ``FASegModel`` (``apply_model``) wrote the labels of ``field_name``, judged on
    the first sample that has one (a query that stops there, whatever the dataset's size)."""
    doc = dataset._sample_collection.find_one({field_name: {"$ne": None}}, {field_name + "." + MODEL_ATTR: 1})
    label = (doc or {}).get(field_name)
    return isinstance(label, dict) and MODEL_ATTR in label


def ground_truth_fields(dataset):
    """Segmentation fields FA-Seg did not write (a run, re-threshold, evaluation or
    ``FASegModel``), the likeliest ground truth first: those with ``mask_targets``, then
    those named like ``ground_truth`` / ``gt``, then by name."""
    names = [n for n in dataset.get_field_schema(embedded_doc_type=fol.Segmentation)
             if not written_by_faseg(dataset, n) and not made_by_faseg_model(dataset, n)]

    def rank(name):
        lower = name.lower()
        named = "ground_truth" in lower or lower in ("gt", "gt_mask", "gt_masks") or lower.startswith("gt_")
        return (not dataset.mask_targets.get(name), not named, name)

    return sorted(names, key=rank)


def dataset_values(dataset, ids, paths):
    """``(found ids, {path: values})`` of the samples ``ids`` of ``dataset``, in that order,
    read straight from its sample collection: every sample whatever the view or group
    slice it was chosen in (selecting ids on the dataset sees only the active slice of a
    grouped dataset, and a view may hide fields). Ids of deleted samples are left out.

    ``paths`` are field names or embedded paths (``"faseg.mask_path"``); ``"id"`` is the
    sample id; top-level label fields come back as label objects, other values as stored.
    """
    from bson import ObjectId

    db_paths = {p: _db_path(p) for p in paths}
    projection = {db: 1 for db in db_paths.values()}
    docs = {}
    for doc in dataset._sample_collection.find({"_id": {"$in": [ObjectId(i) for i in ids]}}, projection):
        docs[str(doc["_id"])] = doc
    found = [i for i in ids if i in docs]
    fields = {p: dataset.get_field(p) for p in paths if "." not in p and p != "id"}
    columns = {}
    for path, db in db_paths.items():
        fld = fields.get(path)
        embedded = isinstance(fld, fof.EmbeddedDocumentField)
        values = []
        for sample_id in found:
            value = _get(docs[sample_id], db)
            if path == "id":
                value = sample_id
            elif embedded and isinstance(value, dict):
                value = fld.to_python(value)
            elif path.endswith("._id") and value is not None:
                value = str(value)
            values.append(value)
        columns[path] = values
    return found, columns


def _db_path(path):
    return ".".join("_id" if chunk == "id" else chunk for chunk in path.split("."))


def _get(doc, path):
    """The value at an embedded ``path`` of a stored document; through a list, the list of
    its elements' values (as ``values("field.list.attr")``)."""
    head, _, rest = path.partition(".")
    if isinstance(doc, list):
        return [_get(item, path) for item in doc]
    if not isinstance(doc, dict):
        return None
    value = doc.get(head)
    return _get(value, rest) if rest and value is not None else value

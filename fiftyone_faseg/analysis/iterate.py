"""Iterating on an FA-Seg run without re-running the diffusion model.

A run made with ``store_scores=True`` keeps each sample's refined score maps
(``<label_field>_scores``: a float16 ``.npz`` of ``(K, h, w)`` maps and their class
names). From them:

-   :func:`rethreshold` recomputes the label maps at another background threshold (and
    optionally over a subset of the classes), in a fraction of a second per hundred
    samples, into the same or a new field;
-   :func:`sweep` gives the mIoU against a ground truth field at many thresholds at
    once (the paper's Table 4, for your data);
-   :func:`set_candidates` and :func:`rerun` (in :mod:`fiftyone_faseg.run.rerun`) fix a
    sample's candidate classes and segment only those samples again.

The label of a pixel is the one the run gave: the same function
(:func:`faseg_core.labels.top_scores`) upsamples the stored scores bicubically to the run's
``image_size``, thresholds them and resizes them to the image with PIL's nearest rule,
and the field's ``mask_targets`` map the classes to pixel values. A run that stores
scores derives its masks from the float16 scores it stores, so re-thresholding at the
run's threshold gives its masks back exactly.

Example usage::

    import fiftyone_faseg as ff
    from fiftyone_faseg.analysis import iterate

    ff.segment_samples(dataset, classes=["cat", "dog"], store_scores=True)
    iterate.rethreshold(dataset, "faseg", 0.45, out_field="faseg_045")
    print(iterate.sweep(dataset, "faseg", "ground_truth"))
"""

import dataclasses
import logging

import numpy as np

import fiftyone.core.fields as fof
import fiftyone.core.labels as fol

from faseg_core.labels import top_scores

from .. import metrics as fm
from .. import store
from ..run import classes as fcl
from ..run import storage
from ..run.leases import FieldLease, Leases
from ..matching import match_classes
from ..run.settings import RunRecord
from ..run.targets import claim_values
from ..fields import (dataset_values, get_mask_targets, int_targets, label_mask, scores_field,
                     validate_segmentation_field)

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLDS = tuple(round(0.3 + 0.05 * i, 2) for i in range(11))  # 0.3 ... 0.8
LATENT_FACTOR = 8  # SD-1.x: the score grid is the latent grid, image_size / 8
_CHUNK = 128


def run_settings(samples, label_field):
    """The settings a run recorded in its label field (:class:`fiftyone_faseg.run.settings.RunRecord`)
    as a dict; empty if no FA-Seg run made the field."""
    record = RunRecord.read(samples._dataset, label_field)
    return dataclasses.asdict(record) if record is not None else {}


def rethreshold(
    samples,
    label_field,
    threshold,
    classes=None,
    out_field=None,
    image_size=None,
    output_dir=None,
    overwrite=False,
    progress=None,
):
    """Recomputes the label maps of an FA-Seg field from its stored scores.

    Samples without ``label_field`` (e.g. failed ones) are left alone; a sample with a
    mask but no stored scores is an error, raised before anything is written. Samples
    are judged on the dataset (a view that hides fields changes nothing).

    A field's masks all come from one set of settings, as its record says: re-thresholding
    only some samples of a field in place, or into an existing field whose other samples
    were made otherwise (another threshold, class subset, model, PAMR, image size or
    source), is refused; write a new ``out_field`` instead. Pixel values never change
    meaning: ``out_field`` keeps its own values and gets values for the new classes
    (atomically, see :mod:`fiftyone_faseg.run.targets`).

    The written field's lease (and the source's, when they differ) is held throughout, so
    no run writes either meanwhile; the written field's record says "in progress" until
    its last sample is written. A copy records its source's scores revision, so a threshold
    curve never reads scores the source got later.

    Example usage::

        from fiftyone_faseg.analysis.iterate import rethreshold

        rethreshold(dataset, "faseg", 0.45)                                  # in place
        rethreshold(dataset.match_tags("review"), "faseg", 0.6, out_field="faseg_060")

    Args:
        samples: a :class:`fiftyone.core.collections.SampleCollection`
        label_field: the Segmentation field of a run made with ``store_scores=True``
        threshold: the new background threshold in ``[0, 1]``
        classes (None): keep only these classes' score maps (the others become
            background or lose to the kept ones); None keeps all
        out_field (None): the field to write; defaults to ``label_field``
        image_size (None): the run's image size; by default the one it recorded
        output_dir (None): where to write PNG masks when the source masks are on disk;
            by default the run's output folder (under this dataset's own root)
        overwrite (False): allow writing into an existing FA-Seg ``out_field`` other
            than ``label_field`` (never a field that no FA-Seg run made)
        progress (None): ``callable(done, total)``

    Returns:
        the list of the sample IDs written
    """
    from ..run.checks import check_field_name

    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError("threshold must be in [0, 1] but is %s" % threshold)
    dataset = samples._dataset
    out_field = out_field or label_field
    check_field_name(out_field, "out_field")
    validate_segmentation_field(dataset, label_field)
    fields = [out_field] + ([label_field] if label_field != out_field else [])
    with Leases(FieldLease(dataset, name, "re-threshold") for name in fields) as leases:
        return _rethreshold(samples, dataset, label_field, float(threshold), classes, out_field, image_size,
                            output_dir, overwrite, progress, leases)


def _rethreshold(samples, dataset, label_field, threshold, classes, out_field, image_size, output_dir, overwrite,
                 progress, leases):
    from ..run.plan import file_path, files_root, finish_record
    from ..run.settings import RUN_ATTR

    source = RunRecord.read(dataset, label_field)
    if source is None:
        raise ValueError("'%s' was not made by an FA-Seg run: re-threshold needs a run's stored scores" % label_field)
    in_place = out_field == label_field
    if source.pending and not in_place:
        raise ValueError("'%s' is half overwritten (its last run was interrupted): finish it first (run it again "
                         "with skip_existing=True), then re-threshold" % label_field)
    ids_by_name = _name_to_value(dataset, label_field)
    keep = _parse_subset(classes, ids_by_name, label_field)
    image_size = image_size or source.image_size
    record = source.replace(threshold=threshold, image_size=image_size,
                            source_field=source.source_field if in_place else label_field,
                            source_revision=source.source_revision if in_place else source.scores_revision,
                            classes=sorted(keep) if keep else None,
                            output_dir=output_dir or source.output_dir)
    ids = [str(i) for i in samples.values("_id")]
    todo = _stored(dataset, ids, label_field)
    record = _check_out_field(dataset, label_field, out_field, overwrite, record, {s.id for s in todo})

    # every check has passed: the first writes
    out_ids = claim_values(dataset, out_field, list(ids_by_name), preferred=get_mask_targets(dataset, label_field))
    if out_field not in dataset.get_field_schema():
        dataset.add_sample_field(out_field, fof.EmbeddedDocumentField, embedded_doc_type=fol.Segmentation)
    record = record.replace(root=files_root(dataset, record.output_dir))
    record.write(dataset, out_field)  # in progress

    written = []
    total = len(todo)
    run = {RUN_ATTR: record.run_id}
    for start in range(0, total, _CHUNK):
        values = {}
        for sample in todo[start : start + _CHUNK]:
            scores, names = _load(sample.id, sample.scores_path, label_field)
            labels = fcl.kept_labels(scores, names, keep, threshold,
                                     image_size or LATENT_FACTOR * scores.shape[-1], sample.width, sample.height)
            mask = _lut(names, out_ids, label_field, sample.id)[labels]
            if sample.mask_path:
                path = storage.write_mask(file_path(record.root, out_field, sample.id, "png"), mask)
                values[sample.id] = {out_field: store.segmentation_doc(mask_path=path, **run)}
            else:
                values[sample.id] = {out_field: store.segmentation_doc(mask, **run)}
        leases.renew()
        store.write_samples(dataset, values)  # on the dataset's own samples (every group slice)
        written.extend(values)
        if callable(progress):
            progress(len(written), total)
    finish_record(dataset, out_field, record)
    return written


def _check_out_field(dataset, label_field, out_field, overwrite, record, todo):
    """The record a re-threshold starts with; refuses a write that would mix settings
    (threshold, class subset, model, PAMR, image size, source) within ``out_field``, or
    write into a field FA-Seg did not make."""
    if out_field not in dataset.get_field_schema():
        return record.started(None, False)
    old = RunRecord.read(dataset, out_field)
    if old is None:
        raise ValueError("field '%s' exists and was not made by FA-Seg (e.g. ground truth): choose a new out_field"
                         % out_field)
    validate_segmentation_field(dataset, out_field)
    if out_field != label_field and not overwrite:
        raise ValueError("field '%s' exists: pass overwrite=True or choose a new out_field" % out_field)
    from ..run.checks import labelled_ids

    differences = old.differences(record)
    labelled = labelled_ids(dataset, out_field)
    if differences:
        others = [i for i in labelled if i not in todo]
        if others:
            diff = ", ".join("%s=%r (asked %r)" % (k, a, b) for k, (a, b) in differences.items())
            raise ValueError(
                "%d other samples of '%s' were made at threshold %s, not as asked (%s): re-threshold every sample "
                "of the field, or write these to a new out_field" % (len(others), out_field, old.threshold, diff)
            )
    return record.started(old, bool(labelled and differences))


def scores_source(samples, label_field):
    """``(field holding the stored scores of label_field's masks, class subset)``: the
    field itself, or the source a re-threshold copied it from. Raises when that source
    was written since the copy was made (its scores may no longer be those the copy's
    masks came from)."""
    dataset = samples._dataset
    record = RunRecord.read(dataset, label_field)
    if record is None:
        raise ValueError("'%s' was not made by an FA-Seg run" % label_field)
    source = record.source_field
    if not source or source == label_field:
        return label_field, record.classes
    current = RunRecord.read(dataset, source)
    if current is None or current.scores_revision != record.source_revision:
        raise ValueError(
            "'%s' was re-thresholded from '%s', which has been written since (or deleted): its stored scores may "
            "not be those '%s' was made from; re-threshold '%s' again" % (label_field, source, label_field, source))
    return source, record.classes


def sweep(samples, label_field, gt_field, thresholds=DEFAULT_THRESHOLDS, classes=None, image_size=None,
          vocabulary=None, progress=None):
    """Dataset mIoU at many background thresholds at once, from stored scores.

    The numbers are those :func:`fiftyone_faseg.evaluation.evaluate_faseg` gives for
    the masks :func:`rethreshold` writes at each threshold: classes matched by name
    (:func:`fiftyone_faseg.matching.match_classes`), one confusion matrix over every
    pixel, ground truth 255 ignored, the mean over the ground truth classes present.
    Samples without stored scores or without a ground truth mask are left out.

    Example usage::

        from fiftyone_faseg.analysis.iterate import sweep

        miou = sweep(dataset, "faseg", "ground_truth")
        best = max(miou, key=miou.get)

    Args:
        samples: a :class:`fiftyone.core.collections.SampleCollection`
        label_field: the Segmentation field of a run made with ``store_scores=True``
        gt_field: the ground truth Segmentation field
        thresholds (0.3, 0.35, ..., 0.8): the thresholds to try
        classes (None): keep only these classes' score maps (as :func:`rethreshold`)
        image_size (None): the run's image size; by default the one it recorded
        vocabulary (None): class-name synonyms (see ``evaluate_faseg``)
        progress (None): ``callable(done, total)``

    Returns:
        a dict mapping each threshold to the mIoU in ``[0, 1]`` (None when no pixel
        counted)
    """
    match, confusions = sweep_confusions(samples, label_field, gt_field, thresholds, classes=classes,
                                         image_size=image_size, vocabulary=vocabulary, progress=progress)
    miou = {t: fm.mean_iou(conf, match["num_gt_classes"]) for t, conf in confusions.items()}
    return {t: None if np.isnan(value) else value for t, value in miou.items()}


def sweep_confusions(samples, label_field, gt_field, thresholds, classes=None, image_size=None, vocabulary=None,
                     progress=None):
    """The pixel confusion matrix at every threshold, counted in one pass over the stored scores.

    Each sample's scores are read and upsampled once; every pixel falls in the bin of the
    thresholds at or below its top score, so one count serves all thresholds. Arguments
    are those of :func:`sweep`.

    Returns:
        ``(match, confusions)``: :func:`fiftyone_faseg.matching.match_classes`'s dict
        (classes, ``num_gt_classes``) and ``{threshold: (C, C) int64 confusion matrix}``
    """

    validate_segmentation_field(samples, label_field)
    validate_segmentation_field(samples, gt_field)
    thresholds = [float(t) for t in thresholds]
    if not thresholds:
        raise ValueError("thresholds is empty: pass e.g. [0.3, 0.35, ..., 0.8]")
    order = np.argsort(thresholds, kind="stable")
    sorted_t = np.asarray(thresholds, np.float32)[order]
    steps = len(thresholds) + 1

    match = match_classes(get_mask_targets(samples, gt_field), get_mask_targets(samples, label_field), vocabulary)
    num = len(match["classes"])
    gt_map = dict(map(tuple, match["gt_values"]))
    pred_map = dict(map(tuple, match["pred_values"]))
    ids_by_name = _name_to_value(samples, label_field)
    keep = _parse_subset(classes, ids_by_name, label_field)
    image_size = image_size or run_settings(samples, label_field).get("image_size")

    counts = np.zeros(num * num * steps, np.int64)
    view = samples.exists(gt_field)
    todo = _stored(samples._dataset, [str(i) for i in view.values("_id")], label_field)
    total = len(todo)
    for done, (sample, gt_seg) in enumerate(_with_field(view, todo, gt_field), 1):
        if gt_seg is None or not gt_seg.has_mask:
            continue
        sample_id = sample.id
        scores, names = _load(sample_id, sample.scores_path, label_field)
        top, index = top_scores(scores, image_size or LATENT_FACTOR * scores.shape[-1], sample.width, sample.height,
                                fcl.kept_indices(names, keep))
        lut = _lut(names, ids_by_name, label_field, sample_id)
        to_class = np.array([pred_map.get(int(v), num) for v in lut], np.int64)
        if (to_class >= num).any():
            raise ValueError("sample %s predicts values outside mask_targets['%s']" % (sample_id, label_field))
        gt = fm.remap(label_mask(gt_seg, gt_field, sample_id), gt_map, default=-1)
        pred = fm.resize_nearest(to_class[index + 1], gt.shape)  # [H, W] class if foreground
        bins = fm.resize_nearest(np.searchsorted(sorted_t, top, side="right"), gt.shape)  # thresholds <= top
        valid = (gt >= 0) & (gt < num)
        flat = (gt[valid] * num + pred[valid]) * steps + bins[valid]
        counts += np.bincount(flat, minlength=counts.size)
        if callable(progress):
            progress(done, total)

    counts = counts.reshape(num, num, steps)
    background = counts.cumsum(axis=-1)  # [..., j]: pixels whose top score is below sorted_t[j]
    confusions = {}
    for j, i in enumerate(order):
        conf = counts.sum(axis=-1) - background[..., j]
        conf[:, 0] += background[..., j].sum(axis=1)
        confusions[thresholds[i]] = conf
    return match, {t: confusions[t] for t in thresholds}


@dataclasses.dataclass
class StoredSample:
    """A sample with a mask and stored scores: where its scores (and, when on disk, its
    mask) are, and its image's size."""

    id: str
    scores_path: str
    mask_path: str
    width: int
    height: int
    filepath: str = None


def _stored(dataset, ids, label_field):
    """The :class:`StoredSample` of each sample among ``ids`` with a ``label_field`` mask,
    read from the dataset; raises if one of them lacks stored scores."""
    name = scores_field(label_field)
    if name not in dataset.get_field_schema():
        raise ValueError(
            "'%s' has no stored scores ('%s' is missing): rerun run_faseg with store_scores=True"
            % (label_field, name)
        )
    fields = ["id", name, label_field + ".mask_path", label_field + "._id", "metadata.width", "metadata.height",
              "filepath"]
    samples = []
    for start in range(0, len(ids), _CHUNK * 8):
        _, columns = dataset_values(dataset, ids[start : start + _CHUNK * 8], fields)
        chunk = [StoredSample(sample_id, path, mask_path, width, height, filepath)
                 for sample_id, path, mask_path, label_id, width, height, filepath in zip(*(columns[f] for f in fields))
                 if label_id is not None]
        samples.extend(_with_sizes(dataset, chunk))
    for sample in samples:
        if not sample.scores_path:
            raise ValueError("sample %s has no stored scores: rerun run_faseg with store_scores=True on it"
                             % sample.id)
        if sample.width is None:
            raise ValueError("sample %s: its image cannot be read, so its mask size is unknown: fix or exclude it"
                             % sample.id)
    return samples


def _with_sizes(dataset, samples):
    """``samples`` (:class:`StoredSample`) with each image's size, computed (and stored as
    the sample's metadata) where the sample has none."""
    from fiftyone.core.metadata import ImageMetadata

    values = {}
    for sample in samples:
        if sample.width is None:
            try:
                metadata = ImageMetadata.build_for(sample.filepath)
            except Exception:  # unreadable: its size stays unknown (reported by the caller)
                metadata = None
            if metadata is not None and metadata.width:
                values[sample.id] = {"metadata": metadata}
                sample.width, sample.height = metadata.width, metadata.height
    store.write_samples(dataset, values)
    return samples


def _with_field(view, todo, field):
    """``(StoredSample, its field value)`` of each sample of ``todo``, read a chunk at a
    time from the dataset (selecting on the view would re-run its whole pipeline for every
    chunk)."""
    for start in range(0, len(todo), _CHUNK):
        chunk = todo[start : start + _CHUNK]
        found, columns = dataset_values(view._dataset, [s.id for s in chunk], [field])
        extra = dict(zip(found, columns[field]))
        yield from ((sample, extra.get(sample.id)) for sample in chunk)


def _load(sample_id, path, label_field):
    try:
        return storage.load_scores(path)
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(
            "sample %s: the stored scores of '%s' at '%s' cannot be read (%s): rerun run_faseg with "
            "store_scores=True on it" % (sample_id, label_field, path, e)
        ) from e


def _name_to_value(samples, label_field):
    targets = int_targets(get_mask_targets(samples._dataset, label_field), "prediction")
    return {str(n): v for v, n in targets.items() if v != 0}


def _parse_subset(classes, ids_by_name, label_field):
    if classes is None or len(classes) == 0:
        return None
    unknown = [c for c in classes if c not in ids_by_name]
    if unknown:
        raise ValueError(
            "classes %s are not in mask_targets['%s'] (%s): choose among those"
            % (unknown, label_field, sorted(ids_by_name))
        )
    return set(classes)


def _lut(names, ids_by_name, label_field, sample_id):
    """Pixel values of label ``k + 1`` = ``names[k]``, background 0 first (``lut[index + 1]``)."""
    unknown = [n for n in names if n not in ids_by_name]
    if unknown:
        raise ValueError(
            "sample %s has stored scores for %s, which mask_targets['%s'] lacks: add them to "
            "dataset.mask_targets['%s'] or rerun the sample" % (sample_id, unknown, label_field, label_field)
        )
    values = [0] + [ids_by_name[n] for n in names]
    return np.array(values, np.uint8 if max(values) < 256 else np.uint16)

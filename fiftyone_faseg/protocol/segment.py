"""Running FA-Seg on a benchmark under the paper's protocol, resumably.

Candidate classes per image come from one of three sources (``classes_from``):

-   ``"json"``: the paper's per-image files (``candidate_classes_*.json`` and
    ``caption_*_blip1.json``), stored first in the sample fields ``protocol_candidates``
    and ``protocol_caption`` (:func:`store_protocol_inputs`), then segmented by
    :func:`segment_from_field`, a loop over :class:`faseg_core.FASeg` that writes the
    same fields as :func:`fiftyone_faseg.run.segment_samples` (which has no per-sample
    class field yet);
-   ``"gt"``: the classes present in each ground truth mask (the paper's "Ground
    Truth" row), through :func:`fiftyone_faseg.run.segment_samples`;
-   ``"tagger"``: our BLIP captioner + CLIP tagger over the benchmark's vocabulary,
    through :func:`fiftyone_faseg.run.segment_samples`.

Runs always skip samples that already have a mask, so an interrupted run continues
where it stopped. Score maps are always stored (float16) for the threshold sweep.
"""

import logging

import fiftyone as fo

from .. import classes as fcl
from .. import run as frun
from .importers import GT_FIELD, ID_FIELD

logger = logging.getLogger(__name__)

CANDIDATES_FIELD = "protocol_candidates"
CAPTION_FIELD = "protocol_caption"
CLASS_SOURCES = ("json", "gt", "tagger")


def store_protocol_inputs(samples, vocabulary, candidates_path=None, captions_path=None):
    """Stores the paper's per-image candidates and captions in sample fields.

    Args:
        samples: a :class:`fiftyone.core.collections.SampleCollection` with ``image_id``
        vocabulary: the benchmark's :class:`faseg_core.candidates.Vocabulary`
        candidates_path (None): a ``candidate_classes_*.json`` (or ``groundtruth_*_val.json``)
        captions_path (None): a ``caption_*_blip1.json``

    Returns:
        a dict with the number of samples that the files do not cover
    """
    from faseg_core.candidates import read_protocol_candidates, read_protocol_captions

    ids = samples.values(ID_FIELD)
    missing = {}
    for path, field, read in (
        (candidates_path, CANDIDATES_FIELD, lambda p: read_protocol_candidates(p, vocabulary)),
        (captions_path, CAPTION_FIELD, read_protocol_captions),
    ):
        if not path:
            continue
        entries = read(path)
        found = [i for i in ids if i in entries]
        if ids and not found:
            raise ValueError(
                "'%s' has none of the %d image ids of this run (e.g. %r; the file has e.g. %r): "
                "is it the file of this benchmark?" % (path, len(ids), ids[0], next(iter(entries), None))
            )
        if len(found) < len(ids):
            logger.warning("'%s' lacks %d of the %d image ids", path, len(ids) - len(found), len(ids))
        missing[field] = len(ids) - len(found)
        if not samples._dataset.has_sample_field(field):
            if field == CANDIDATES_FIELD:
                samples._dataset.add_sample_field(field, fo.ListField, subfield=fo.StringField)
            else:
                samples._dataset.add_sample_field(field, fo.StringField)
        samples.set_values(field, [entries.get(i) for i in ids])
    return missing


def segment(samples, segmenter, classes_from, label_field, vocabulary, output_dir, caption_field=None,
            progress=None, overwrite=False):
    """Segments the samples that have no ``label_field`` yet.

    Args:
        samples: the benchmark's samples
        segmenter: a :class:`fiftyone_faseg.protocol.scoring.ConsistentSegmenter`
        classes_from: ``"json"``, ``"gt"`` or ``"tagger"``
        label_field: where the masks go
        vocabulary: the benchmark's vocabulary
        output_dir: the folder of masks and score files
        caption_field (None): a field of captions (``"json"`` uses ``protocol_caption``)
        progress (None): True for a progress bar, or ``callable(done, total)``
        overwrite (False): segment every sample again

    Returns:
        a :class:`fiftyone_faseg.run.RunSummary`
    """
    if classes_from not in CLASS_SOURCES:
        raise ValueError("unknown classes_from %r: choose one of %s" % (classes_from, CLASS_SOURCES))
    kwargs = dict(label_field=label_field, output_dir=output_dir, progress=progress)
    if classes_from == "json":
        return segment_from_field(samples, segmenter, vocabulary, caption_field=caption_field,
                                  overwrite=overwrite, **kwargs)
    common = dict(gt_field=GT_FIELD, caption_field=caption_field, segmenter=segmenter, store_scores=True,
                  skip_existing=not overwrite, overwrite=overwrite, **kwargs)
    if classes_from == "gt":
        return frun.segment_samples(samples, classes_from="gt_field", **common)
    return frun.segment_samples(samples, classes_from="tagger", vocabulary=vocabulary, **common)


def segment_from_field(samples, segmenter, vocabulary, label_field, output_dir, classes_field=CANDIDATES_FIELD,
                       caption_field=CAPTION_FIELD, progress=None, overwrite=False):
    """Segments each sample into the classes listed in its ``classes_field``.

    Writes what :func:`fiftyone_faseg.run.segment_samples` writes (masks under
    ``output_dir``, ``_candidates``, ``_caption``, ``_scores``, ``_error``, and
    ``dataset.mask_targets[label_field]`` with the ground truth's pixel values).
    Samples with no candidate (48 COCO images of the paper's files) get no mask and
    an ``_error``, as the reference skips them.

    Args:
        samples: a collection with a ``classes_field`` list of class names
        segmenter: a loaded :class:`faseg_core.FASeg` (or a wrapper of one)
        vocabulary: the vocabulary the names belong to (all of them get pixel values)
        label_field: where the masks go
        output_dir: the folder of masks and score files
        classes_field ("protocol_candidates"): the field of candidate names
        caption_field ("protocol_caption"): a field of captions, or None
        progress (None): True for a progress bar, or ``callable(done, total)``
        overwrite (False): segment every sample again

    Returns:
        a :class:`fiftyone_faseg.run.RunSummary`
    """
    from faseg_core.candidates import Candidate
    from faseg_core.images import ImageError, load_image

    dataset = samples._dataset
    if not dataset.has_sample_field(classes_field):
        raise ValueError(
            "field '%s' does not exist: store the candidates first (store_protocol_inputs, or the "
            "--candidates option)" % classes_field
        )
    summary = frun.RunSummary(label_field)
    targets = samples if overwrite else samples.exists(label_field, False)
    if not overwrite and dataset.has_sample_field(label_field):
        summary.skipped = samples.exists(label_field).values("id")
    ids = targets.values("id")

    preferred = fcl.gt_classes(samples, GT_FIELD)
    class_ids = fcl.assign_ids(list(vocabulary.names), dataset.mask_targets.get(label_field), preferred)
    summary.mask_targets = {v: n for n, v in sorted(class_ids.items(), key=lambda kv: kv[1])}
    if dataset.mask_targets.get(label_field) != summary.mask_targets:
        dataset.mask_targets = {**dataset.mask_targets, label_field: summary.mask_targets}
        dataset.save()
    if not ids:
        return summary
    frun._declare_fields(dataset, label_field)

    fields = ["filepath", classes_field] + ([caption_field] if caption_field and dataset.has_sample_field(caption_field) else [])
    caption_field = caption_field if len(fields) == 3 else None
    bar = fo.ProgressBar(total=len(ids)) if progress is True else None
    step = segmenter.config.batch_size
    for start in range(0, len(ids), step):
        batch_ids = ids[start:start + step]
        jobs, failed = [], {}
        for sample in samples.select(batch_ids, ordered=True).select_fields(fields):
            names = [n for n in (sample[classes_field] or []) if n in class_ids]
            if not names:
                failed[sample.id] = "no candidate classes for sample %s in field '%s'" % (sample.id, classes_field)
                continue
            try:
                image = load_image(sample.filepath)
            except (ImageError, TypeError) as e:
                failed[sample.id] = str(e)
                continue
            caption = sample[caption_field] if caption_field else None
            jobs.append((sample, image, [Candidate(n, 1.0, "user") for n in names], caption))
        outputs = []
        if jobs:
            results = segmenter([j[1] for j in jobs], [[c.name for c in j[2]] for j in jobs], [j[3] for j in jobs])
            outputs = [(s, r, cands, cap) for (s, _, cands, cap), r in zip(jobs, results)]
        frun._write_batch(dataset, label_field, outputs, failed, class_ids, output_dir, True, summary)
        if bar is not None:
            bar.update(len(batch_ids))
        elif callable(progress):
            progress(min(start + step, len(ids)), len(ids))
    if bar is not None:
        bar.close()
    return summary

"""From rows of samples to what a run stores, in three steps that can run apart:

1.  :func:`iter_rows` (driver): the samples of a plan as plain rows (id, image path,
    candidate classes, caption), read from the dataset a chunk at a time, so the cost per
    sample is the same for any view and any size;
2.  :func:`segment_rows` (wherever the model is: this process, or a Ray actor): read
    the images, propose classes, segment, and write the sample's files (mask, scores,
    heatmap) atomically under the run's root; returns picklable :class:`SampleOutput`;
3.  :func:`write_outputs` (driver): one database update per sample carrying every
    field of that sample (whole or not at all), all of a batch in one bulk write
    (:mod:`fiftyone_faseg.store`, the one place that writes samples' fields).

Per-image problems (an unreadable image, no candidate classes) become that sample's
``<label_field>_error``; a problem of the run itself (the model cannot segment anything)
raises :class:`RunError` before anything of the batch is written.
"""

import logging
from dataclasses import dataclass, field

import numpy as np

from . import classes as fcl
from . import storage
from .. import store
from ..fields import candidates_field, caption_field, dataset_values, error_field, heatmap_field, scores_field
from .plan import file_path, finish_run
from .settings import RUN_ATTR

logger = logging.getLogger(__name__)

HEATMAP_SIDE = 128
_ROW_CHUNK = 256


class RunError(RuntimeError):
    """An error of the run as a whole (not of one image): nothing of the batch was written."""


@dataclass
class SampleOutput:
    """What a run stores on one sample (plain data: it travels from workers to the driver).

    ``error`` set means the sample failed: its label fields are cleared and the reason kept.
    """

    id: str
    mask: np.ndarray = None
    mask_path: str = None
    candidates: list = field(default_factory=list)  # [(name, confidence, source)]
    caption: str = None
    scores_path: str = None
    heatmap: np.ndarray = None
    heatmap_path: str = None
    error: str = None


@dataclass
class Job:
    """One readable image of a batch on its way through the model: its row, the image,
    its candidate classes ``[(name, confidence, source)]``, caption, and the model's
    :class:`faseg_core.pipeline.FASegResult` once segmented."""

    row: dict
    image: object
    candidates: list
    caption: str = None
    result: object = None

    @property
    def id(self):
        return self.row["id"]

    @property
    def names(self):
        return [c[0] for c in self.candidates]


# ---------------------------------------------------------------------- 1. rows


def iter_rows(dataset, plan, chunk_size=_ROW_CHUNK):
    """Yields lists of rows (dicts: ``id``, ``filepath``, ``candidates`` (None: the
    tagger proposes them), ``caption``) for ``plan.ids``, read from the dataset's
    samples (never a view, which may hide fields or group slices) one chunk at a time."""
    settings = plan.settings
    fields = ["id", "filepath"]
    extra = [f for f in (settings.prompt.caption_field, plan.per_sample_field,
                         settings.classes.gt_field if plan.classes_from == "gt_field" else None) if f]
    for start in range(0, len(plan.ids), chunk_size):
        chunk = plan.ids[start : start + chunk_size]
        _, columns = dataset_values(dataset, chunk, fields + extra)
        rows = []
        for i, sample_id in enumerate(columns["id"]):
            row = dict(id=sample_id, filepath=columns["filepath"][i],
                       caption=columns[settings.prompt.caption_field][i] if settings.prompt.caption_field else None)
            row["candidates"] = _row_candidates(plan, {k: v[i] for k, v in columns.items()}, sample_id)
            rows.append(row)
        yield rows


def _row_candidates(plan, values, sample_id):
    source = {"list": "user", "gt_field": "ground_truth"}.get(plan.classes_from, plan.classes_from)
    if plan.tagging:
        return None
    if plan.per_sample_field:
        return fcl.sample_candidates(values[plan.per_sample_field])
    if plan.classes_from == "gt_field":
        seg = values[plan.settings.classes.gt_field]
        names = fcl.present_classes(seg, plan.settings.classes.gt_field, plan.gt_values, sample_id)
        return [(name, 1.0, source) for name in names]
    return [(name, 1.0, source) for name in plan.names]


# ---------------------------------------------------------------------- 2. segment


def load_rows(rows):
    """``(loaded, failed)``: ``[(row, RGB image)]`` of the readable images, and
    :class:`SampleOutput` errors of the others."""
    from faseg_core.images import ImageError, load_image

    loaded, failed = [], []
    for row in rows:
        try:
            loaded.append((row, load_image(row["filepath"])))
        except ImageError as e:  # names the image and what is wrong
            failed.append(SampleOutput(row["id"], error=str(e)))
        except Exception as e:  # any other failure to read one image (e.g. a decompression bomb) is its own
            failed.append(SampleOutput(row["id"], error="image '%s' is not a readable image: %s: %s"
                                       % (row["filepath"], type(e).__name__, e)))
    return loaded, failed


def segment_loaded(loaded, plan, segmenter, proposer=None):
    """Proposes classes (tagger/captioner) and segments the readable images of a batch.

    Returns:
        ``(jobs, failed)``: the segmented :class:`Job` of each sample, and the
        :class:`SampleOutput` errors of samples without candidates or whose segmentation
        failed

    Raises:
        RunError: the model failed on every image of the batch, one by one too
    """
    from faseg_core.candidates import propose_candidates

    if not loaded:
        return [], []
    images = [image for _, image in loaded]
    captions = [row["caption"] for row, _ in loaded]
    proposals = None
    if plan.tagging:
        captioner, tagger = proposer
        proposals = propose_candidates(images, plan.vocabulary, captioner=captioner, tagger=tagger, fallback="empty")
        captions = [c if c is not None else p.caption for c, p in zip(captions, proposals)]
    elif plan.captioning:
        todo = [i for i, c in enumerate(captions) if c is None]
        if todo:
            for i, caption in zip(todo, proposer[0]([images[i] for i in todo])):
                captions[i] = caption
    jobs, failed = [], []
    for i, (row, image) in enumerate(loaded):
        cands = ([(c.name, c.confidence, c.source) for c in proposals[i]] if proposals is not None
                 else list(row["candidates"]))
        if not cands:
            failed.append(SampleOutput(row["id"], error=(
                "no candidate classes for sample %s: pass classes=[...], use another classes_from, or check its "
                "ground truth / the tagger's vocabulary" % row["id"])))
            continue
        jobs.append(Job(row, image, cands, captions[i]))
    if not jobs:
        return [], failed
    try:
        results = segmenter([j.image for j in jobs], [j.names for j in jobs], [j.caption for j in jobs],
                            config=plan.config)
    except Exception as batch_error:
        # find the samples that fail; the others still get their masks
        results, errors = [], []
        for job in jobs:
            try:
                results.append(segmenter(job.image, job.names, job.caption, config=plan.config)[0])
            except Exception as e:
                logger.warning("sample %s failed: %s", job.id, e)
                errors.append(e)
                results.append(None)
                failed.append(SampleOutput(job.id, error="segmentation failed: %s" % e))
        if len(errors) == len(jobs):
            raise RunError("FA-Seg failed on every image of a batch, so nothing was written: %s" % batch_error) \
                from batch_error
    for job, result in zip(jobs, results):
        job.result = result
    return [job for job in jobs if job.result is not None], failed


def finish_outputs(jobs, plan):
    """Masks in the run's pixel values, and the sample's files written (atomically) under
    the run's root: ``[SampleOutput]``."""

    output, config = plan.settings.output, plan.config
    label_field = plan.label_field
    outputs = []
    for job in jobs:
        row, result = job.row, job.result
        out = SampleOutput(job.id, candidates=job.candidates, caption=job.caption)
        labels = result.label_map
        if output.store_scores or output.keep_classes:
            # the masks are those the stored float16 scores give back (re-thresholding reproduces them)
            scores = result.scores.astype(np.float16).astype(np.float32) if output.store_scores else result.scores
            labels = fcl.kept_labels(scores, result.classes, output.keep_classes, config.threshold,
                                     config.image_size, labels.shape[1], labels.shape[0])
        if output.store_scores:
            out.scores_path = storage.save_scores(file_path(plan.root, scores_field(label_field), row["id"], "npz"),
                                                  scores, result.classes)
        mask = fcl.to_mask(labels, result.classes, plan.class_ids)
        if output.output_dir:
            out.mask_path = storage.write_mask(file_path(plan.root, label_field, row["id"], "png"), mask)
        else:
            out.mask = mask
        if output.heatmap:
            heat = top_score_heatmap(result.scores)
            if output.output_dir:
                out.heatmap_path = storage.write_mask(
                    file_path(plan.root, heatmap_field(label_field), row["id"], "png"), heat)
            else:
                out.heatmap = heat
        outputs.append(out)
    return outputs


def segment_rows(rows, plan, segmenter, proposer=None):
    """Steps 2 in one call (what a worker does with a batch of rows): ``[SampleOutput]``,
    one per row, in order."""
    loaded, unreadable = load_rows(rows)
    jobs, failed = segment_loaded(loaded, plan, segmenter, proposer)
    outputs = {o.id: o for o in finish_outputs(jobs, plan) + unreadable + failed}
    return [outputs[row["id"]] for row in rows]


def top_score_heatmap(scores, side=HEATMAP_SIDE):
    """The top class's score of ``(K, h, w)`` maps as a ``(side, side)`` uint8 heatmap
    (0-255 for scores 0-1; bicubic resize)."""
    import torch

    from faseg_core.hard import upsample_bicubic

    top = torch.as_tensor(np.asarray(scores, dtype=np.float32)).amax(dim=0, keepdim=True)  # [1, h, w]
    top = upsample_bicubic(top, side)[0]  # [side, side]
    return (top.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


# ---------------------------------------------------------------------- 3. write


def sample_values(plan, out):
    """``{field: value}`` of one sample: every field the run writes, all at once (a failed
    sample: no labels, its error). Labels are :mod:`fiftyone_faseg.store`'s documents
    (its fast path: a run's plumbing costs less than building label objects), each
    carrying the write's run id (``RUN_ATTR``)."""
    label_field = plan.label_field
    values = {
        label_field: None,
        candidates_field(label_field): None,
        caption_field(label_field): None,
        error_field(label_field): out.error,
        scores_field(label_field): out.scores_path,
        heatmap_field(label_field): None,
    }
    if out.error is None:
        values[label_field] = store.segmentation_doc(out.mask, out.mask_path, **{RUN_ATTR: plan.record.run_id})
        values[candidates_field(label_field)] = store.classifications_doc(
            store.classification_doc(n, float(c), source=s) for n, c, s in out.candidates)
        values[caption_field(label_field)] = out.caption
        if out.heatmap_path or out.heatmap is not None:
            values[heatmap_field(label_field)] = store.heatmap_doc(out.heatmap, out.heatmap_path)
    return values


def write_outputs(dataset, plan, outputs, summary=None):
    """Writes a batch: one update per sample setting every field of the run (a failed
    sample: no labels, its error), all in one bulk write (:func:`fiftyone_faseg.store.write_samples`).
    Fields the schema lacks and that would only be cleared are left out. Updates
    ``summary`` (a RunSummary).

    The run's lease is renewed first (a run whose field was taken over writes nothing
    more); after the plan's last sample the run's final record is written and the lease
    given back (:func:`fiftyone_faseg.run.plan.finish_run`), whichever process loop (local or
    Ray) called this."""
    if not outputs:
        return summary
    if plan.lease is not None:
        plan.lease.renew()
    schema = dataset.get_field_schema()
    values = {}
    for out in outputs:
        values[out.id] = {}
        for name, value in sample_values(plan, out).items():
            if name in schema:
                values[out.id][name] = value
            elif value is not None:
                raise RunError("field '%s' is not declared: prepare_run must run before write_outputs" % name)
    store.write_samples(dataset, values, schema=schema)
    if summary is not None:
        for out in outputs:
            if out.error is None:
                summary.processed.append(out.id)
            else:
                summary.failed[out.id] = out.error
    plan.written += len(outputs)
    if plan.written >= len(plan.ids):
        finish_run(dataset, plan)
    return summary

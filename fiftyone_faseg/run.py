"""Running FA-Seg over a FiftyOne collection: :func:`segment_samples`.

Each batch is written as soon as it is segmented (masks first, to a temporary name and
renamed, then the database), so an interrupted run keeps everything it finished and
``skip_existing=True`` picks up the rest. A sample whose image cannot be read gets no
mask and its reason in ``<label_field>_error``; the run goes on.
"""

import logging
import os
from dataclasses import dataclass, field

import fiftyone as fo
import fiftyone.core.labels as fol

from . import classes as fcl
from . import storage
from .fields import candidates_field, scores_field
from .constants import DEFAULT_CAPTIONER, DEFAULT_MODEL, DEFAULT_TAGGER

logger = logging.getLogger(__name__)


_CACHE = {}


def load_segmenter(model_path=DEFAULT_MODEL, device=None, dtype=None):
    """A :class:`faseg_core.FASeg`, cached per (checkpoint, device, dtype) in this process."""
    import torch

    from faseg_core import FASeg

    device = str(torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")))
    key = ("faseg", os.fspath(model_path), device, str(dtype))
    if key not in _CACHE:
        _CACHE[key] = FASeg.from_pretrained(model_path, device=device, dtype=dtype)
    return _CACHE[key]


def load_proposer(captioner_path=DEFAULT_CAPTIONER, tagger_model=DEFAULT_TAGGER, device=None):
    """`(Captioner, Tagger)`, cached per checkpoint and device in this process."""
    from faseg_core.candidates import Captioner, Tagger

    name, pretrained = tagger_model
    key = ("proposer", os.fspath(captioner_path), name, pretrained, str(device))
    if key not in _CACHE:
        _CACHE[key] = (
            Captioner.from_pretrained(captioner_path, device=device),
            Tagger.from_pretrained(name, pretrained=pretrained, device=device),
        )
    return _CACHE[key]


def clear_cache():
    """Forget the cached models (frees their memory once nothing else holds them)."""
    _CACHE.clear()


@dataclass
class RunSummary:
    """What a run did: sample ids processed, skipped (already labelled) and failed (with reasons)."""

    label_field: str
    processed: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    failed: dict = field(default_factory=dict)
    mask_targets: dict = field(default_factory=dict)

    def __str__(self):
        return "%s: %d processed, %d skipped, %d failed" % (
            self.label_field, len(self.processed), len(self.skipped), len(self.failed)
        )


def segment_samples(samples, label_field="faseg", progress=None, **kwargs):
    """Segments the images of a collection with FA-Seg (see :func:`iter_segment_samples`
    for every argument and what is stored).

    Example usage::

        import fiftyone_faseg as ff

        ff.segment_samples(dataset, label_field="faseg", classes=["cat", "dog", "sofa"])
        dataset.mask_targets["faseg"]  # {1: "cat", 2: "dog", 3: "sofa"}

    Args:
        samples: a :class:`fiftyone.core.collections.SampleCollection`
        label_field ("faseg"): the field to store masks in
        progress (None): True for a progress bar, or ``callable(done, total)``
        **kwargs: see :func:`iter_segment_samples`

    Returns:
        a :class:`RunSummary`
    """
    summary = RunSummary(label_field)
    bar = None
    for done, total, summary in iter_segment_samples(samples, label_field=label_field, **kwargs):
        if progress is True:
            bar = bar or fo.ProgressBar(total=total)
            bar.set_iteration(done)
        elif callable(progress):
            progress(done, total)
    if bar is not None:
        bar.close()
    return summary


def iter_segment_samples(
    samples,
    label_field="faseg",
    classes=None,
    classes_from=None,
    classes_field=None,
    gt_field=None,
    vocabulary=None,
    caption_field=None,
    use_captioner=False,
    captioner_path=DEFAULT_CAPTIONER,
    tagger_model=DEFAULT_TAGGER,
    model_path=DEFAULT_MODEL,
    config=None,
    threshold=None,
    batch_size=None,
    image_size=None,
    skip_existing=False,
    overwrite=False,
    output_dir=None,
    store_scores=False,
    heatmap=False,
    pamr=None,
    device=None,
    dtype=None,
    segmenter=None,
    proposer=None,
):
    """Segments the images of a collection with FA-Seg, one batch at a time.

    A generator: after each batch is written it yields ``(done, total, summary)``, so
    callers can report progress (operators) or stop early; everything yielded so far is
    stored.

    Stored on each processed sample:

    -   ``<label_field>``: an :class:`fiftyone.core.labels.Segmentation` (its mask on
        disk under ``output_dir`` when given), 0 = background
    -   ``<label_field>_candidates``: :class:`fiftyone.core.labels.Classifications` of the
        candidate classes, each with its ``confidence`` and ``source``
    -   ``<label_field>_caption``: the caption used in the prompt, or None
    -   ``<label_field>_error``: None, or why the sample has no mask
    -   ``<label_field>_scores``: path of the stored score maps, with ``store_scores``
    -   ``<label_field>_heatmap``: an :class:`fiftyone.core.labels.Heatmap` of the top
        class's score (uint8, 0-255 for scores 0-1, at most 128 px; on disk under
        ``output_dir`` when given), with ``heatmap``

    The run's settings (threshold, image_size, model_path, output_dir, store_scores,
    heatmap, pamr) are recorded in the label field's ``info["faseg"]``, so that
    :mod:`fiftyone_faseg.iterate` can re-threshold and rerun it the same way.

    ``dataset.mask_targets[label_field]`` maps one pixel value to each class name for
    the whole dataset (values seen in earlier runs are kept; with a ground truth field,
    a class takes the ground truth's value when free).

    Args:
        samples: a :class:`fiftyone.core.collections.SampleCollection`
        label_field ("faseg"): the field to store masks in
        classes (None): class names (``classes_from="list"``), or the tagger's vocabulary
        classes_from (None): ``"list"``, ``"mask_targets"``, ``"gt_field"``,
            ``"tagger"`` or ``"candidates"`` (each sample's
            ``<label_field>_candidates``; see :mod:`fiftyone_faseg.classes`); defaults
            to ``"list"`` when ``classes`` are given
        classes_field (None): with ``classes_from="candidates"``, read each sample's
            classes from this field instead (Classifications or a list of names)
        gt_field (None): a ground truth Segmentation field with ``mask_targets``
        vocabulary (None): a :class:`faseg_core.candidates.Vocabulary` for the tagger
        caption_field (None): a string field holding each sample's caption
        use_captioner (False): caption images with BLIP (always on with the tagger)
        captioner_path (DEFAULT_CAPTIONER): a BLIP Hub id or local folder
        tagger_model (DEFAULT_TAGGER): ``(open_clip model name or local folder,
            pretrained tag or checkpoint)`` of the CLIP tagger
        model_path (DEFAULT_MODEL): a Hugging Face Hub id or a local SD-1.x folder
        config (None): a :class:`faseg_core.FASegConfig` (paper defaults)
        threshold (None): background threshold (overrides ``config``)
        batch_size (None): images per UNet call (overrides ``config``)
        image_size (None): resize images to this side (the paper's 512 by default);
            the attention-grid weights move with it (``FASegConfig.at_image_size``)
        skip_existing (False): process only samples without ``label_field``
        overwrite (False): replace existing labels; without it (and without
            ``skip_existing``) a collection that already has labels raises an error
        output_dir (None): write masks as PNGs here instead of in the database
        store_scores (False): keep each sample's refined score maps (float16 ``.npz``)
        heatmap (False): store the top class's score as ``<label_field>_heatmap``
        pamr (None): refine the scores with PAMR before thresholding (True/False
            override ``config.pamr``)
        device (None), dtype (None): where and how the model runs
        segmenter (None): a loaded :class:`faseg_core.FASeg` to use instead of loading
        proposer (None): a loaded ``(Captioner, Tagger)`` for ``classes_from="tagger"``

    Yields:
        ``(done, total, summary)``: samples done, samples to do, a :class:`RunSummary`
    """
    from faseg_core import FASegConfig
    from faseg_core.images import ImageError, load_image

    classes_from = fcl.parse_classes_from(classes, classes_from, gt_field)
    dataset = samples._dataset
    summary = RunSummary(label_field)

    # 1. Which samples: never overwrite silently
    targets = samples
    if skip_existing:
        targets = samples.exists(label_field, False)
        summary.skipped = samples.exists(label_field).values("id")
    elif not overwrite and label_field in dataset.get_field_schema():
        count = samples.exists(label_field).count()
        if count:
            raise ValueError(
                "field '%s' already has labels on %d samples: pass overwrite=True to replace them "
                "or skip_existing=True to process only the others" % (label_field, count)
            )
    ids = targets.values("id")

    # 2. One pixel value per class name, fixed before any worker writes
    per_sample_field = (classes_field or candidates_field(label_field)) if classes_from == fcl.CANDIDATES else None
    names = fcl.run_class_names(targets if per_sample_field else samples, classes, classes_from, gt_field,
                                vocabulary, classes_field, label_field)
    class_ids = fcl.fix_mask_targets(samples, label_field, names, gt_field)
    summary.mask_targets = dict(dataset.mask_targets[label_field])
    if not ids:
        yield 0, 0, summary
        return

    # 3. Models (a cached segmenter gets this run's settings, restored afterwards)
    seg = segmenter or load_segmenter(model_path, device=device, dtype=dtype)
    run_config = config or (segmenter.config if segmenter is not None else FASegConfig())
    if image_size and image_size != run_config.image_size:
        run_config = run_config.at_image_size(image_size)
    changes = {k: v for k, v in (("threshold", threshold), ("batch_size", batch_size), ("pamr", pamr)) if v is not None}
    run_config = run_config.replace(**changes) if changes else run_config
    tagging = classes_from == "tagger"
    if tagging or use_captioner:
        proposer = proposer or load_proposer(captioner_path, tuple(tagger_model), device=device)
    vocab = fcl.tagger_vocabulary(samples, classes, gt_field, vocabulary) if tagging else None
    gt_names = fcl.gt_classes(samples, gt_field) if classes_from == "gt_field" else None
    fixed = names if classes_from in ("list", "mask_targets") else None
    declare_fields(dataset, label_field)

    # 4. Batches: read, propose, segment, write
    fields = ["filepath"] + [f for f in (gt_field, caption_field, per_sample_field) if f]
    settings = dict(threshold=run_config.threshold, image_size=run_config.image_size, model_path=os.fspath(model_path),
                    output_dir=output_dir, store_scores=bool(store_scores), heatmap=bool(heatmap), pamr=run_config.pamr)
    recorded = False
    step = run_config.batch_size
    previous, seg.config = seg.config, run_config
    try:
        for start in range(0, len(ids), step):
            batch_ids = ids[start : start + step]
            batch = samples.select(batch_ids, ordered=True).select_fields(fields)
            good, failed = [], {}
            for sample in batch:
                try:
                    good.append((sample, load_image(sample.filepath)))
                except (ImageError, TypeError) as e:
                    failed[sample.id] = str(e)
            outputs = _segment_batch(seg, good, classes_from, fixed, gt_field, gt_names, caption_field,
                                     proposer if (tagging or use_captioner) else None, vocab, failed,
                                     per_sample_field=per_sample_field)
            if store_scores:
                outputs = [(s, _as_stored(r, run_config), c, cap) for s, r, c, cap in outputs]
            _write_batch(dataset, label_field, outputs, failed, class_ids, output_dir, store_scores, summary,
                         heatmap=heatmap)
            if not recorded and outputs:
                recorded = _record_run(dataset, label_field, settings)
            yield start + len(batch_ids), len(ids), summary
    finally:
        seg.config = previous


def declare_fields(dataset, label_field):
    """Typed fields for the run's side outputs, so all-None batches still have a schema."""
    schema = dataset.get_field_schema()
    for suffix in ("_caption", "_error", "_scores"):
        if label_field + suffix not in schema:
            dataset.add_sample_field(label_field + suffix, fo.StringField)


def _as_stored(result, config):
    """The result as its float16 score file gives it back, so that masks and stored scores
    agree exactly (re-thresholding at the run's threshold reproduces the masks)."""
    import dataclasses

    import numpy as np

    from faseg_core import labels_from_scores

    scores = result.scores.astype(np.float16).astype(np.float32)
    height, width = result.label_map.shape
    labels = labels_from_scores(scores, config.threshold, config.image_size, width, height)
    return dataclasses.replace(result, scores=scores, label_map=labels)


def _record_run(dataset, label_field, settings):
    """Keep the run's settings in the label field's ``info["faseg"]`` (for re-thresholding and reruns)."""
    field = dataset.get_field(label_field)
    if field is None:
        return False
    field.info = {**(field.info or {}), "faseg": settings}
    field.save()
    return True


def _segment_batch(seg, good, classes_from, fixed, gt_field, gt_names, caption_field, proposer, vocab, failed,
                   per_sample_field=None):
    """`[(sample, result, candidates, caption)]` for the readable samples; failures go to `failed`."""
    from faseg_core.candidates import Candidate, propose_candidates

    if not good:
        return []
    images = [image for _, image in good]
    proposals, captions = None, [None] * len(good)
    if proposer is not None:
        captioner, tagger = proposer
        if classes_from == "tagger":
            proposals = propose_candidates(images, vocab, captioner=captioner, tagger=tagger, fallback="empty")
            captions = [p.caption for p in proposals]
        else:
            captions = captioner(images)
    jobs = []
    for i, (sample, image) in enumerate(good):
        if proposals is not None:
            cands = list(proposals[i])
        elif per_sample_field:
            cands = [Candidate(*c) for c in fcl.sample_candidates(sample[per_sample_field])]
        else:
            names = fixed if fixed is not None else fcl.present_classes(sample, gt_field, gt_names)
            source = {"list": "user", "gt_field": "ground_truth"}.get(classes_from, classes_from)
            cands = [Candidate(name, 1.0, source) for name in names]
        caption = sample[caption_field] if caption_field else captions[i]
        if not cands:
            failed[sample.id] = (
                "no candidate classes for sample %s: pass classes=[...], use another classes_from, "
                "or check its ground truth / the tagger's vocabulary" % sample.id
            )
            continue
        jobs.append((sample, image, cands, caption))
    if not jobs:
        return []
    try:
        results = seg([j[1] for j in jobs], [[c.name for c in j[2]] for j in jobs], [j[3] for j in jobs])
    except Exception:
        # isolate the sample that fails; the others still get their masks
        results = []
        for sample, image, cands, caption in jobs:
            try:
                results.append(seg(image, [c.name for c in cands], caption)[0])
            except Exception as e:
                logger.warning("sample %s failed: %s", sample.id, e)
                failed[sample.id] = "segmentation failed: %s" % e
                results.append(None)
    return [(s, r, cands, cap) for (s, _, cands, cap), r in zip(jobs, results) if r is not None]


def _write_batch(dataset, label_field, outputs, failed, class_ids, output_dir, store_scores, summary, heatmap=False):
    """Files first (atomic), then one bulk database write per field."""
    masks, candidates, captions, errors, scores, heatmaps = {}, {}, {}, {}, {}, {}
    for sample, result, cands, caption in outputs:
        mask = fcl.to_mask(result.label_map, result.classes, class_ids)
        if output_dir:
            path = storage.write_mask(os.path.join(output_dir, label_field, sample.id + ".png"), mask)
            masks[sample.id] = fol.Segmentation(mask_path=path)
        else:
            masks[sample.id] = fol.Segmentation(mask=mask)
        if store_scores:
            folder = output_dir or os.path.join(fo.config.default_dataset_dir, "faseg", dataset.name)
            path = os.path.join(folder, scores_field(label_field), sample.id + ".npz")
            scores[sample.id] = storage.save_scores(path, result.scores, result.classes)
        if heatmap:
            from .iterate import top_score_heatmap

            heat = top_score_heatmap(result.scores)
            if output_dir:
                path = storage.write_mask(os.path.join(output_dir, label_field + "_heatmap", sample.id + ".png"), heat)
                heatmaps[sample.id] = fol.Heatmap(map_path=path, range=[0, 255])
            else:
                heatmaps[sample.id] = fol.Heatmap(map=heat, range=[0, 255])
        candidates[sample.id] = fol.Classifications(
            classifications=[fol.Classification(label=c.name, confidence=c.confidence, source=c.source) for c in cands]
        )
        captions[sample.id] = caption
        errors[sample.id] = None
        summary.processed.append(sample.id)
    for sample_id, reason in failed.items():
        # a sample this run was asked to (re)do and could not: no stale labels from an older run
        for values in (masks, candidates, captions, scores, heatmaps):
            values[sample_id] = None
        errors[sample_id] = reason
        summary.failed[sample_id] = reason
    schema = dataset.get_field_schema()
    if not store_scores or not heatmap:
        # outputs this run does not make must not survive from an older run of the field
        for sample_id in masks:
            if not store_scores:
                scores[sample_id] = None
            if not heatmap:
                heatmaps[sample_id] = None
    for name, values in (
        (label_field, masks),
        (candidates_field(label_field), candidates),
        (label_field + "_caption", captions),
        (scores_field(label_field), scores),
        (label_field + "_heatmap", heatmaps),
        (label_field + "_error", errors),
    ):
        if values and (name in schema or any(v is not None for v in values.values())):
            dataset.set_values(name, values, key_field="id")

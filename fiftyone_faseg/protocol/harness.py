"""The whole protocol in one call: import, segment (resumably), evaluate, sweep, report."""

import logging
import os
import time

import numpy as np

from .. import metrics as fm
from .benchmarks import PAPER_THRESHOLDS, get_benchmark
from .importers import GT_FIELD, ID_FIELD, INFO_KEY, import_benchmark
from .segment import CAPTION_FIELD, CLASS_SOURCES, segment, store_protocol_inputs

logger = logging.getLogger(__name__)


def make_config(benchmark, threshold=None, image_size=None, batch_size=None, **overrides):
    """The paper's :class:`faseg_core.FASegConfig` of a benchmark, with overrides (any
    FASegConfig field), applied as runs apply them
    (:meth:`fiftyone_faseg.run.settings.Overrides.apply`).

    ``image_size`` moves the attention-grid weights with
    :meth:`faseg_core.FASegConfig.at_image_size` (tiny test models use 128).
    """
    from faseg_core import FASegConfig

    from ..run.parts import Overrides

    overrides.update(threshold=threshold, image_size=image_size, batch_size=batch_size)
    return Overrides(overrides).apply(FASegConfig.for_dataset(get_benchmark(benchmark).key))


def _check_run_record(dataset, label_field, record, overwrite):
    runs = dict(dataset.info.get(INFO_KEY, {}).get("runs", {}))
    old = runs.get(label_field)
    if old and old != record and not overwrite and dataset.exists(label_field).count():
        diff = sorted(k for k in set(old) | set(record) if old.get(k) != record.get(k))
        raise ValueError(
            "field '%s' of dataset '%s' holds a run with other settings (%s: %s, now %s): pass "
            "--overwrite to redo it, or another --label-field"
            % (label_field, dataset.name, ", ".join(diff), [old.get(k) for k in diff], [record.get(k) for k in diff])
        )
    runs[label_field] = record
    dataset.info = {**dataset.info, INFO_KEY: {**dataset.info.get(INFO_KEY, {}), "runs": runs}}
    dataset.save()


def run_protocol(benchmark, root, classes_from="json", candidates=None, captions=None,
                 model_path=None, device=None, dtype=None, batch_size=None, threshold=None,
                 image_size=None, output_dir="faseg-protocol", dataset_name=None, label_field=None,
                 limit=None, split=None, thresholds=PAPER_THRESHOLDS, overwrite=False, progress=True,
                 segmenter=None, evaluate=True, captioner_path=None, tagger_model=None, **overrides):
    """Runs the FA-Seg protocol on a benchmark and returns its report (a JSON-able dict).

    Example usage::

        from fiftyone_faseg.protocol import run_protocol

        report = run_protocol(
            "voc", "/data/VOCdevkit/VOC2012",
            candidates="faseg-protocol/candidate_classes_voc.json",
            captions="faseg-protocol/caption_voc_blip1.json",
        )
        report["miou"]  # in %

    Args:
        benchmark: ``"voc"``, ``"context"`` or ``"coco_object"``
        root: the benchmark's folder
        classes_from ("json"): ``"json"`` (the paper's files), ``"gt"`` or ``"tagger"``
        candidates (None), captions (None): the paper's JSON files
        model_path (None): Hub id or SD-1.x folder (default: the paper's 2-RF model)
        device (None), dtype (None): where and how the model runs
        batch_size (None), threshold (None), image_size (None): config overrides
            (default: the benchmark's preset)
        output_dir ("faseg-protocol"): masks, score maps, ground truth copies, reports
        dataset_name (None), label_field (None): default ``faseg-protocol-<bench>-<split>``
            and ``faseg_<classes_from>``
        limit (None): the first ``limit`` images of the split only
        split (None): the split
        thresholds (PAPER_THRESHOLDS): the sweep (the run's threshold is added)
        overwrite (False): segment every image again
        progress (True): progress bars
        segmenter (None): a loaded :class:`faseg_core.FASeg` (then ``model_path``,
            ``device`` and ``dtype`` are not used)
        evaluate (True): also store a FiftyOne evaluation run (``<label_field>_eval``)
        captioner_path (None), tagger_model (None): BLIP id/folder and ``(open_clip model
            or folder, pretrained)`` for ``classes_from="tagger"`` (default: the paper's)
        **overrides: any other :class:`faseg_core.FASegConfig` field (e.g. ``pamr=True``)

    Returns:
        a dict (see the keys of the JSON report in the CLI's help)
    """
    from ..analysis.iterate import sweep_confusions
    from ..constants import DEFAULT_MODEL
    from ..run.models import load_segmenter
    from ..run.settings import recorded_config

    bench = get_benchmark(benchmark)
    if classes_from not in CLASS_SOURCES:
        raise ValueError("unknown classes_from %r: choose one of %s" % (classes_from, CLASS_SOURCES))
    if classes_from == "json" and not candidates:
        raise ValueError(
            "classes_from='json' needs the paper's candidate file: pass --candidates "
            "<folder>/candidate_classes_%s.json (or --classes-from gt / tagger)" % bench.key.split("_")[0]
        )
    output_dir = os.path.abspath(output_dir)
    label_field = label_field or "faseg_" + classes_from
    config = make_config(bench.key, threshold, image_size, batch_size, **overrides)
    model_path = os.fspath(model_path or DEFAULT_MODEL)

    dataset, ids = import_benchmark(bench.key, root, dataset_name, output_dir, split, limit, progress)
    view = dataset.select_by(ID_FIELD, ids, ordered=True)
    vocabulary = bench.vocabulary()
    record = {"classes_from": classes_from, "model": model_path, "threshold": config.threshold,
              "image_size": config.image_size, "candidates": os.path.abspath(candidates) if candidates else None,
              "captions": os.path.abspath(captions) if captions else None}
    if recorded_config(overrides, own=()):  # absent otherwise: records written before compare equal
        record["config"] = recorded_config(overrides, own=())
    _check_run_record(dataset, label_field, record, overwrite)
    if candidates or captions:
        store_protocol_inputs(view, vocabulary, candidates if classes_from == "json" else None, captions)

    pending = view.count() if overwrite else view.exists(label_field, False).count()
    timing = {"processed": 0, "failed": 0, "wall_s": None, "model_s_per_image": None,
              "wall_s_per_image": None, "gpu_max_memory_bytes": None}
    device_name = dtype_name = None
    if pending:
        import torch

        seg = segmenter or load_segmenter(model_path, device=device, dtype=dtype)
        wrapped = TimedSegmenter(seg)
        device_name, dtype_name = str(seg.device), str(seg.dtype).replace("torch.", "")
        cuda = seg.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(seg.device)
        start = time.perf_counter()
        summary = segment(view, wrapped, config, classes_from, label_field, vocabulary, output_dir,
                          caption_field=CAPTION_FIELD if captions else None, progress=progress,
                          overwrite=overwrite,
                          proposer_kwargs={k: v for k, v in (("captioner_path", captioner_path),
                                                             ("tagger_model", tagger_model)) if v})
        wall = time.perf_counter() - start
        logger.info("%s", summary)
        done = len(summary.processed)
        timing.update(processed=done, failed=len(summary.failed), wall_s=wall,
                      model_s_per_image=wrapped.model_seconds / done if done else None,
                      wall_s_per_image=wall / done if done else None,
                      gpu_max_memory_bytes=int(torch.cuda.max_memory_allocated(seg.device)) if cuda else None)

    # One pass over the stored scores counts every threshold; at the run's threshold the
    # counts are those of its masks (they were made from the same scores by the same function).
    evaluated = view.exists(label_field).exists(GT_FIELD)
    thresholds = sorted(set(map(float, thresholds)) | {config.threshold})
    match, confusions = sweep_confusions(evaluated, label_field, GT_FIELD, thresholds, image_size=config.image_size,
                                         vocabulary=vocabulary)
    num_gt = match["num_gt_classes"]
    class_iou = fm.iou_per_class(confusions[config.threshold])[:num_gt]
    report = {
        "benchmark": bench.key,
        "title": bench.title,
        "dataset": dataset.name,
        "label_field": label_field,
        "classes_from": classes_from,
        "model": model_path,
        "device": device_name,
        "dtype": dtype_name,
        "image_size": config.image_size,
        "threshold": config.threshold,
        "batch_size": config.batch_size,
        "candidates": record["candidates"],
        "captions": record["captions"],
        "num_images": len(ids),
        "num_evaluated": evaluated.count(),
        "num_without_mask": len(ids) - view.exists(label_field).count(),
        "miou": _pct(fm.mean_iou(confusions[config.threshold], num_gt)),
        "class_iou": {c: _pct(v) for c, v in zip(match["classes"], class_iou)},
        "sweep": {"%.2f" % t: _pct(fm.mean_iou(conf, num_gt)) for t, conf in confusions.items()},
        "paper_miou": dict(zip(("candidates", "ground_truth"), bench.paper_miou)),
        "timing": timing,
    }
    if evaluate:
        report["fiftyone_eval_key"] = _fiftyone_evaluation(view, label_field, vocabulary)
    return report


def _fiftyone_evaluation(view, label_field, vocabulary):
    """Stores the run as a FiftyOne evaluation (App's Model Evaluation panel); returns its key."""
    from ..evaluation import evaluate_faseg

    key = label_field + "_eval"
    if view._dataset.has_evaluation(key):
        view._dataset.delete_evaluation(key)
    evaluate_faseg(view.exists(label_field), label_field, gt_field=GT_FIELD, eval_key=key, vocabulary=vocabulary, progress=False)
    return key


def _pct(value):
    return None if value is None or np.isnan(value) else 100.0 * float(value)


class TimedSegmenter(object):
    """A :class:`faseg_core.FASeg` call that adds up its time (``model_seconds``) and
    images (``images``); attributes are read from the segmenter (never written to it).

    Args:
        segmenter: a loaded :class:`faseg_core.FASeg`
    """

    def __init__(self, segmenter):
        self.segmenter = segmenter
        self.model_seconds = 0.0
        self.images = 0

    def __getattr__(self, name):
        return getattr(self.__dict__["segmenter"], name)

    def __call__(self, *args, **kwargs):
        import torch

        start = time.perf_counter()
        results = self.segmenter(*args, **kwargs)
        if self.segmenter.device.type == "cuda":
            torch.cuda.synchronize(self.segmenter.device)
        self.model_seconds += time.perf_counter() - start
        self.images += len(results)
        return results

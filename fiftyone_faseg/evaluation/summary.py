"""What the FA-Seg panel shows, read from what the evaluation and the run stored.

:func:`threshold_curve` runs once, at evaluation time, when the prediction has stored
score maps; :func:`evaluation_summary` only reads the stored results (one small document,
whatever the number of samples) and the run record, so the panel opens at once.
"""

import numpy as np

from ..fields import scores_field
from ..run.settings import RunRecord

CURVE_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 ... 0.95


def threshold_curve(samples, pred_field, gt_field, vocabulary=None, thresholds=CURVE_THRESHOLDS):
    """The dataset mIoU at many background thresholds, from the run's stored scores.

    Args:
        samples: the evaluated :class:`fiftyone.core.collections.SampleCollection`
        pred_field: the FA-Seg prediction field
        gt_field: the ground truth field
        vocabulary (None): class-name synonyms, as in ``evaluate_faseg``
        thresholds (0.05, 0.1, ..., 0.95): thresholds besides the run's own

    Returns:
        ``(curve, note)``: ``curve`` is None or a dict with ``thresholds``, ``miou``
        (aligned lists), the run's ``threshold`` and the ``scores_field`` read; ``note``
        says why there is no curve
    """
    from ..analysis.iterate import scores_source, sweep

    dataset = samples._dataset
    record = RunRecord.read(dataset, pred_field)
    if record is None:
        return None, "'%s' was not made by an FA-Seg run" % pred_field
    try:
        source, _ = scores_source(samples, pred_field)  # never a source rewritten since the copy
    except ValueError as e:
        return None, "no threshold curve: %s" % e
    if not dataset.has_sample_field(scores_field(source)):
        return None, "'%s' has no stored scores (run FA-Seg with store_scores=True)" % source

    grid = set(float(t) for t in thresholds)
    if record.threshold is not None:
        grid.add(float(record.threshold))
    grid = sorted(grid)
    try:
        miou = sweep(samples, source, gt_field, grid, classes=record.classes, vocabulary=vocabulary)
    except ValueError as e:
        return None, "no threshold curve: %s" % e
    curve = dict(thresholds=grid, miou=[miou[t] for t in grid], threshold=record.threshold, scores_field=source)
    return curve, None


def is_stale(samples, eval_key):
    """Whether the prediction field of an FA-Seg evaluation changed after it ran (a run,
    rerun or re-threshold wrote it since, or it was deleted).

    Args:
        samples: a :class:`fiftyone.core.collections.SampleCollection`
        eval_key: an evaluation key

    Returns:
        True or False
    """
    dataset = samples._dataset
    config = dataset.get_evaluation_info(eval_key).config
    if not dataset.has_sample_field(config.pred_field):
        return True
    record = RunRecord.read(dataset, config.pred_field)
    recorded = getattr(config, "pred_revision", None)
    if record is not None and record.in_progress:
        return True  # a write has started and not finished: the field is changing
    return (record.revision if record is not None else None) != recorded


def all_faseg_evaluations(samples):
    """The keys of every FA-Seg evaluation of a collection's dataset, finished or not,
    newest first."""
    return list(_faseg_keys(samples))


def list_faseg_evaluations(samples):
    """The keys of the finished FA-Seg evaluations of a collection's dataset (those with
    results), newest first; see :func:`unfinished_faseg_evaluations` for the others."""
    return [k for k in _faseg_keys(samples) if has_results(samples, k)]


def unfinished_faseg_evaluations(samples):
    """The keys of FA-Seg evaluations registered without results (left by versions that
    registered a run before evaluating it, when it then failed), newest first.
    :func:`fiftyone_faseg.evaluation.reevaluate_faseg` runs one again;
    ``dataset.delete_evaluation(key)`` deletes it and what it owns."""
    return [k for k in _faseg_keys(samples) if not has_results(samples, k)]


def has_results(samples, eval_key):
    """Whether the evaluation ``eval_key`` stored its results (it finished)."""
    try:
        return samples._dataset.load_evaluation_results(eval_key) is not None
    except Exception:
        return False


def _faseg_keys(samples):
    dataset = samples._dataset
    infos = []
    for key in dataset.list_evaluations():
        try:
            infos.append(dataset.get_evaluation_info(key))
        except Exception:  # a record this FiftyOne cannot read is not ours to show
            continue
    infos = [i for i in infos if getattr(i.config, "method", None) == "faseg"]
    return [i.key for i in sorted(infos, key=lambda i: i.timestamp, reverse=True)]


def evaluation_summary(samples, eval_key, top_k=10):
    """Everything the FA-Seg panel shows about one evaluation, as plain data.

    Example usage::

        from fiftyone_faseg.evaluation import evaluation_summary

        s = evaluation_summary(dataset, "faseg_eval")
        s["miou"], s["classes"][:3], s["stale"]

    Args:
        samples: a :class:`fiftyone.core.collections.SampleCollection`
        eval_key: an FA-Seg evaluation key
        top_k (10): the number of confusion pairs

    Returns:
        a dict with ``eval_key``, ``pred_field``, ``gt_field``, ``miou``, ``classes``
        (``[{"class", "iou", "gt_pixels", "pred_pixels"}]`` of the classes in the mean,
        worst IoU first), ``confusions`` (``[{"gt", "pred", "pixels"}]``, most pixels
        first, background included), ``counts``, ``candidate_recall``
        (``[{"class", "samples", "proposed", "recall"}]``, lowest recall first, or None),
        ``threshold_curve`` (or None, with ``curve_note``), ``per_class``, ``stale`` and
        ``class_table`` (:meth:`FASegResults.class_table`: every class with its IoU,
        precision, recall, F1, pixel and sample counts)

    Raises:
        ValueError: if ``eval_key`` is not a finished FA-Seg evaluation
    """
    dataset = samples._dataset
    if eval_key not in dataset.list_evaluations():
        raise ValueError("no evaluation '%s' on dataset '%s'" % (eval_key, dataset.name))
    config = dataset.get_evaluation_info(eval_key).config
    results = dataset.load_evaluation_results(eval_key)
    if results is None:
        raise ValueError(
            "evaluation '%s' has no results (a run that did not finish): run it again with "
            "reevaluate_faseg(dataset, '%s') or delete it with dataset.delete_evaluation('%s')"
            % (eval_key, eval_key, eval_key)
        )
    summary = dict(results.summary or {})
    report = results.iou_report()
    classes = [dict({"class": c}, **{k: r[k] for k in ("iou", "gt_pixels", "pred_pixels")})
               for c, r in report.items() if r["in_mean"]]
    classes.sort(key=lambda r: r["iou"])
    recall = summary.get("candidate_recall")
    if recall is not None:
        recall = [dict({"class": c}, recall=r["proposed"] / r["samples"], **r) for c, r in recall.items()]
        recall.sort(key=lambda r: r["recall"])
    miou = results.miou
    return dict(
        eval_key=eval_key,
        pred_field=config.pred_field,
        gt_field=config.gt_field,
        miou=None if np.isnan(miou) else miou,
        classes=classes,
        confusions=[dict(gt=g, pred=p, pixels=n) for g, p, n in results.top_confusions(top_k)],
        counts={k: summary.get(k) for k in ("evaluated", "no_prediction", "no_ground_truth", "unreadable")},
        candidate_recall=recall,
        threshold_curve=summary.get("threshold_curve"),
        curve_note=summary.get("curve_note"),
        per_class=bool(getattr(config, "per_class", False)),
        stale=is_stale(samples, eval_key),
        class_table=results.class_table(),
    )


def preview_miou(curve, threshold):
    """The stored mIoU at the curve's threshold nearest to ``threshold``:
    ``(threshold used, mIoU or None)``."""
    if not curve:
        return None, None
    values = np.asarray(curve["thresholds"], dtype=float)
    k = int(np.argmin(np.abs(values - float(threshold))))
    return float(values[k]), curve["miou"][k]

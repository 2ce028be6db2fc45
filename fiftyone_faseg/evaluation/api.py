"""``evaluate_faseg`` and ``reevaluate_faseg``: validate, then run FiftyOne's own
segmentation evaluation with the FA-Seg method."""

import fiftyone.core.media as fom
import fiftyone.core.validation as fov

from ..fields import get_mask_targets, validate_segmentation_field
from . import outputs
from ..matching import Aliases, aliases_of
from .method import FASegEvaluationConfig
from .summary import threshold_curve as _threshold_curve


def evaluate_faseg(
    samples,
    pred_field,
    gt_field="ground_truth",
    eval_key="faseg_eval",
    vocabulary=None,
    progress=None,
    worst_k=outputs.DEFAULT_WORST_K,
    per_class=True,
    error_masks=True,
    threshold_curve=True,
):
    """Evaluates the semantic segmentations in ``pred_field`` against ``gt_field``
    with the mIoU of the FA-Seg protocol.

    Classes are matched by name through the two fields' ``mask_targets``
    (``dataset.mask_targets[field]``, else ``dataset.default_mask_targets``); pixel
    value 0 is background on both sides. See :func:`match_classes`. The rule
    (FASEG_REFERENCE.md §9, MMSegmentation's ``IoUMetric``): one pixel confusion matrix
    summed over all images, ``IoU_c = TP / (GT + Pred - TP)``, ground truth 255 ignored,
    predictions resized to the ground truth size with nearest, classes absent from both
    left out of the mean. Predicted classes without a ground truth counterpart get their
    own column (they lower the IoU of the classes they cover) but are not in the mean.

    If an ``eval_key`` is provided, the run is stored on the dataset (the App's Model
    Evaluation panel and the FA-Seg panel show it, with the mIoU as its ``miou`` metric)
    and these sample fields are written, each marked
    ``field.info["faseg_eval"] = {"eval_key": eval_key}``::

        mIoU of each sample (%, indexed):   sample.<eval_key>_miou
        per-class IoU (per_class=True):     sample.<eval_key>_classes
        confusion pairs (per_class=True):   sample.<eval_key>_confusions
        error overlay (error_masks=True):   sample.<eval_key>_errors
        FiftyOne's own:                     sample.<eval_key>_accuracy/_precision/_recall

    (see :mod:`fiftyone_faseg.evaluation.per_sample`), and a saved view
    ``<eval_key>_worst`` holds the ``worst_k`` samples of lowest ``<eval_key>_miou``.
    Nothing is written into ``pred_field`` or ``gt_field``. Each of these outputs is
    created only if its name is free or already this evaluation's; ``delete_evaluation``
    and ``rename_evaluation`` delete or rename only what the evaluation recorded as its
    own (see :mod:`fiftyone_faseg.evaluation.outputs`). The run is registered only once
    every sample is evaluated. An existing run of the key stays, record and outputs,
    until the new one is complete (the new one writes under ``<eval_key>__next_*`` names
    meanwhile, then takes the key's): if the new one fails or is interrupted, the old
    one is still there.

    Ground truth and predictions may be 2-D integer masks, palette PNGs (read as their
    indices), or RGB masks when the field's ``mask_targets`` are RGB hex strings (as
    FiftyOne's own evaluation accepts them); a sample whose mask file is missing or
    cannot be read is left out and counted (``results.summary["unreadable"]``).

    Example usage::

        import fiftyone as fo
        from fiftyone_faseg.evaluation import evaluate_faseg, class_view

        dataset = fo.load_dataset("voc-val")
        results = evaluate_faseg(dataset, "faseg", gt_field="ground_truth")
        print(results.markdown())

        worst = dataset.load_saved_view("faseg_eval_worst")
        people = class_view(dataset, "faseg_eval", "person")  # worst person IoU first

    Args:
        samples: a :class:`fiftyone.core.collections.SampleCollection` of images
        pred_field: the name of the field of predicted
            :class:`fiftyone.core.labels.Segmentation` masks
        gt_field ("ground_truth"): the name of the field of ground truth
            :class:`fiftyone.core.labels.Segmentation` masks
        eval_key ("faseg_eval"): a key under which to store the run, or None to
            store nothing
        vocabulary (None): an object with a method ``canonical(name) -> str | None``
            that maps a class name or synonym to its canonical name (e.g.
            ``faseg_core.candidates.Vocabulary``). By default names are compared
            lowercased and stripped
        progress (None): whether to render a progress bar (True/False), use the
            default ``fiftyone.config.show_progress_bars`` (None), or a progress
            callback function to invoke instead
        worst_k (25): the number of samples in the ``<eval_key>_worst`` view
        per_class (True): write ``<eval_key>_classes`` and ``<eval_key>_confusions``
        error_masks (True): write the ``<eval_key>_errors`` overlay
        threshold_curve (True): when the prediction is an FA-Seg run with stored
            scores, store the mIoU at thresholds 0.05-0.95 with the results (the FA-Seg
            panel's threshold slider)

    Returns:
        a :class:`FASegResults`
    """
    fov.validate_non_grouped_collection(samples)
    if samples.media_type != fom.IMAGE:
        raise ValueError(
            "FA-Seg evaluation needs an image collection; %r has media type '%s'"
            % (samples._dataset.name, samples.media_type)
        )
    for field in (gt_field, pred_field):
        validate_segmentation_field(samples, field)

    if eval_key is not None and (not isinstance(eval_key, str) or not eval_key.isidentifier()):
        raise ValueError("eval_key must be a valid Python identifier (e.g. 'faseg_eval'), got %r" % (eval_key,))
    aliases = aliases_of(vocabulary, get_mask_targets(samples, gt_field), get_mask_targets(samples, pred_field))
    results = samples.evaluate_segmentations(
        pred_field,
        gt_field=gt_field,
        eval_key=eval_key,
        method=FASegEvaluationConfig,
        progress=progress,
        aliases=aliases,
        per_class=per_class,
        error_masks=error_masks,
        worst_k=worst_k,
    )

    if threshold_curve:
        curve, note = _threshold_curve(samples, pred_field, gt_field, vocabulary=vocabulary)
        results.summary.update(threshold_curve=curve, curve_note=note)
        if eval_key is not None:
            results.save()

    return results


def reevaluate_faseg(samples, eval_key, progress=None):
    """Runs an FA-Seg evaluation again, on the view and with the settings it was run
    with (e.g. after a re-threshold made it stale; see :func:`is_stale`).

    Example usage::

        from fiftyone_faseg.evaluation import is_stale, reevaluate_faseg

        if is_stale(dataset, "faseg_eval"):
            reevaluate_faseg(dataset, "faseg_eval")

    Args:
        samples: a :class:`fiftyone.core.collections.SampleCollection` of the dataset
        eval_key: an FA-Seg evaluation key
        progress (None): as in :func:`evaluate_faseg`

    Returns:
        a :class:`FASegResults`
    """
    dataset = samples._dataset
    if eval_key not in dataset.list_evaluations():
        raise ValueError("no evaluation '%s' on dataset '%s'" % (eval_key, dataset.name))
    config = dataset.get_evaluation_info(eval_key).config
    if getattr(config, "method", None) != "faseg":
        raise ValueError("evaluation '%s' is not an FA-Seg evaluation" % eval_key)
    results = dataset.load_evaluation_results(eval_key)  # None: a run that never finished
    curve = results is None or "threshold_curve" in (results.summary or {})
    return evaluate_faseg(
        dataset.load_evaluation_view(eval_key),
        config.pred_field,
        gt_field=config.gt_field,
        eval_key=eval_key,
        vocabulary=Aliases(getattr(config, "aliases", None) or {}),
        progress=progress,
        worst_k=getattr(config, "worst_k", outputs.DEFAULT_WORST_K),
        per_class=getattr(config, "per_class", True),
        error_masks=getattr(config, "error_masks", True),
        threshold_curve=curve,
    )

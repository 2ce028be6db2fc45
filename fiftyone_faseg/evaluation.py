"""mIoU evaluation of FA-Seg (or any) semantic segmentations inside FiftyOne.

:func:`evaluate_faseg` runs FiftyOne's own
:meth:`evaluate_segmentations() <fiftyone.core.collections.SampleCollection.evaluate_segmentations>`
with a custom evaluation method, :class:`FASegEvaluationConfig`, so the run is a regular
``"segmentation"`` evaluation (the App's Model Evaluation panel shows it, with its
confusion matrix), and adds what FiftyOne does not compute: per-class IoU, the dataset
mIoU (the ``@faseg/fiftyone-faseg/miou`` custom metric), a per-sample
``<eval_key>_miou`` field, and a saved view ``<eval_key>_worst`` of the worst samples.

Why a custom method: FiftyOne's ``"simple"`` method compares raw pixel values under ONE
``mask_targets`` for both fields, but an open-vocabulary model numbers its classes in its
own way (ground truth ``{1: "cat", 2: "dog"}``, prediction ``{1: "Dog", 2: "cat"}``).
:class:`FASegEvaluation` matches the two fields' classes **by name** (see
:func:`match_classes`) and maps both masks to one class index space before counting, so
the confusion matrix in the App, the mIoU metric and the per-sample field all count the
same pixels as :mod:`fiftyone_faseg.metrics` does.

The rule (FASEG_REFERENCE.md §9, MMSegmentation's ``IoUMetric``): one pixel confusion
matrix summed over all images, ``IoU_c = TP / (GT + Pred - TP)``, ground truth 255
ignored, predictions resized to the ground truth size with nearest, classes absent from
both ground truth and prediction left out of the mean.

**Predicted classes without a ground truth counterpart** (``"zebra"`` when the ground
truth has no zebra class) get their own column in the confusion matrix: every pixel they
cover counts as a miss of the ground truth class there (it lowers that class's IoU) and
never as a match. They are **not** part of the mean: the mIoU averages the ground truth
classes only (the benchmark's class list), so values stay comparable with published
numbers; their pixel counts are in :meth:`FASegResults.iou_report`. Predicted values
that have no name at all in the prediction's ``mask_targets`` are pooled into one such
class, ``"(unnamed)"``.
"""

import logging
import warnings

import numpy as np

import fiftyone.core.fields as fof
import fiftyone.core.labels as fol
import fiftyone.core.media as fom
import fiftyone.core.validation as fov
import fiftyone.operators as foo
import fiftyone.utils.eval.segmentation as fous

from . import metrics as fm
from .constants import BACKGROUND
from .fields import get_mask_targets, int_targets, label_mask, validate_segmentation_field

logger = logging.getLogger(__name__)

PLUGIN_NAME = "@faseg/fiftyone-faseg"
EVALUATE_OPERATOR_URI = PLUGIN_NAME + "/evaluate_faseg"
MIOU_METRIC_URI = PLUGIN_NAME + "/miou"
UNNAMED = "(unnamed)"
DEFAULT_WORST_K = 25


def evaluate_faseg(
    samples,
    pred_field,
    gt_field="ground_truth",
    eval_key="faseg_eval",
    vocabulary=None,
    progress=None,
    worst_k=DEFAULT_WORST_K,
):
    """Evaluates the semantic segmentations in ``pred_field`` against ``gt_field``
    with the mIoU of the FA-Seg protocol.

    Classes are matched by name through the two fields' ``mask_targets``
    (``dataset.mask_targets[field]``, else ``dataset.default_mask_targets``); pixel
    value 0 is background on both sides. See :func:`match_classes`.

    If an ``eval_key`` is provided, the run is stored on the dataset (it appears in
    the App's Model Evaluation panel) and these fields are populated::

        mIoU of each sample:   sample.<eval_key>_miou
        FiftyOne's own:        sample.<eval_key>_accuracy/_precision/_recall

    and a saved view ``<eval_key>_worst`` holds the ``worst_k`` samples of lowest
    ``<eval_key>_miou``, worst first.

    Example usage::

        import fiftyone as fo
        from fiftyone_faseg.evaluation import evaluate_faseg

        dataset = fo.load_dataset("voc-val")
        dataset.mask_targets["faseg"] = {1: "cat", 2: "dog"}
        dataset.save()

        results = evaluate_faseg(dataset, "faseg", gt_field="ground_truth")
        print(results.miou)
        print(results.markdown())

        worst = dataset.load_saved_view("faseg_eval_worst")

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

    matching = match_classes(
        get_mask_targets(samples, gt_field),
        get_mask_targets(samples, pred_field),
        vocabulary=vocabulary,
    )

    metric = _get_miou_metric()
    custom_metrics = [MIOU_METRIC_URI] if metric is not None else None

    results = samples.evaluate_segmentations(
        pred_field,
        gt_field=gt_field,
        eval_key=eval_key,
        method=FASegEvaluationConfig,
        custom_metrics=custom_metrics,
        progress=progress,
        worst_k=worst_k,
        **matching,
    )

    if MIOU_METRIC_URI not in (results.custom_metrics or {}):
        # The plugin is not installed where FiftyOne looks for plugins, or the
        # metric failed (FiftyOne only logs that): compute it here, so errors surface
        if metric is not None:
            logger.warning(
                "The '%s' metric left no value; computing it directly",
                MIOU_METRIC_URI,
            )

        value = compute_miou_metric(samples, results)
        if value is not None:
            if results.custom_metrics is None:
                results.custom_metrics = {}

            results.custom_metrics[MIOU_METRIC_URI] = {
                "key": "miou",
                "value": value,
                "label": "mIoU",
                "lower_is_better": False,
            }

        if eval_key is not None:
            results.save()

    if eval_key is not None:
        _save_worst_view(samples, eval_key, worst_k)

    return results


def match_classes(gt_targets, pred_targets, vocabulary=None, ignore_index=fm.IGNORE_INDEX):
    """Matches predicted classes to ground truth classes by name.

    Names are compared after ``vocabulary.canonical(name)`` (when it returns a name),
    lowercased, with whitespace collapsed. Pixel value 0 is background on both sides
    whatever its name; ``ignore_index`` in the ground truth is never a class.

    The class list is the ground truth classes (background first, then by pixel
    value), followed by the predicted classes that match none of them.

    Args:
        gt_targets: the ground truth ``{pixel value: name}`` dict
        pred_targets: the prediction ``{pixel value: name}`` dict
        vocabulary (None): an object with ``canonical(name) -> str | None``
        ignore_index (255): the ground truth value that is ignored

    Returns:
        a dict with keys ``classes`` (list of names), ``gt_values`` and
        ``pred_values`` (lists of ``[pixel value, class index]``) and
        ``num_gt_classes`` (the classes in the mean are ``classes[:num_gt_classes]``)
    """
    canon = _canonicalizer(vocabulary)
    gt_targets = int_targets(gt_targets, "ground truth")
    pred_targets = int_targets(pred_targets, "prediction")

    classes = [gt_targets.get(0) or BACKGROUND]
    gt_values = [[0, 0]]
    index = {canon(classes[0]): 0}
    for value, name in sorted(gt_targets.items()):
        if value == 0 or value == ignore_index:
            continue

        key = canon(name)
        if key in index:
            raise ValueError(
                "Ground truth classes '%s' and '%s' have the same name after "
                "normalization ('%s'): give each pixel value a distinct name in the "
                "ground truth mask_targets" % (classes[index[key]], name, key)
            )

        index[key] = len(classes)
        gt_values.append([value, len(classes)])
        classes.append(str(name))

    index.setdefault(canon(BACKGROUND), 0)
    num_gt_classes = len(classes)

    pred_values = [[0, 0]]
    for value, name in sorted(pred_targets.items()):
        if value == 0:
            continue

        key = canon(name)
        if key not in index:
            index[key] = len(classes)
            classes.append(str(name))

        pred_values.append([value, index[key]])

    return dict(
        classes=classes,
        gt_values=gt_values,
        pred_values=pred_values,
        num_gt_classes=num_gt_classes,
    )


def compute_miou_metric(samples, results):
    """Computes the dataset mIoU of segmentation results, and the per-sample
    ``<eval_key>_miou`` field when the results have an evaluation key.

    This is what the ``@faseg/fiftyone-faseg/miou`` evaluation metric does. It reads
    the pixel confusion matrix of the results and, per sample, the ``(gt, pred,
    pixel count, gt id, pred id)`` matches that FiftyOne stores with them; on results
    of FiftyOne's ``"simple"`` method every class is in the mean.

    Args:
        samples: the evaluated :class:`fiftyone.core.collections.SampleCollection`
        results: a :class:`fiftyone.utils.eval.segmentation.SegmentationResults`

    Returns:
        the dataset mIoU in ``[0, 1]``, or None if no pixel was counted
    """
    num_gt_classes = getattr(results.config, "num_gt_classes", None)
    value = fm.mean_iou(results.pixel_confusion_matrix, num_gt_classes)

    eval_key = results.key
    gt_field = results.config.gt_field
    if eval_key is not None and not samples._is_frame_field(gt_field):
        _write_sample_miou(samples, results, eval_key, gt_field, num_gt_classes)

    return None if np.isnan(value) else value


class FASegEvaluationConfig(fous.SegmentationEvaluationConfig):
    """Configuration of :class:`FASegEvaluation`; built by :func:`evaluate_faseg`.

    Args:
        pred_field: the name of the predicted segmentation field
        gt_field: the name of the ground truth segmentation field
        classes (None): the class names (see :func:`match_classes`)
        gt_values (None): ``[pixel value, class index]`` pairs of the ground truth
        pred_values (None): ``[pixel value, class index]`` pairs of the prediction
        num_gt_classes (None): the number of ground truth classes, which come first
            in ``classes`` and are the classes of the mean
        ignore_index (255): the ground truth value that is ignored
        worst_k (25): the size of the ``<eval_key>_worst`` saved view
        average ("micro"): the averaging of FiftyOne's per-sample precision and
            recall fields
        compute_dice (False): whether to compute the Dice coefficient per sample
        custom_metrics (None): a list of custom metrics to compute or dict mapping
            metric names to kwargs dicts
    """

    def __init__(
        self,
        pred_field,
        gt_field,
        classes=None,
        gt_values=None,
        pred_values=None,
        num_gt_classes=None,
        ignore_index=fm.IGNORE_INDEX,
        worst_k=DEFAULT_WORST_K,
        average="micro",
        compute_dice=False,
        custom_metrics=None,
        **kwargs,
    ):
        super().__init__(
            pred_field,
            gt_field,
            compute_dice=compute_dice,
            custom_metrics=custom_metrics,
            **kwargs,
        )
        if classes is None or gt_values is None or pred_values is None:
            raise ValueError(
                "FASegEvaluationConfig needs classes, gt_values and pred_values: "
                "use fiftyone_faseg.evaluation.evaluate_faseg(), which builds them "
                "from the fields' mask_targets"
            )

        self.classes = list(classes)
        self.gt_values = [[int(v), int(i)] for v, i in gt_values]
        self.pred_values = [[int(v), int(i)] for v, i in pred_values]
        self.num_gt_classes = (
            len(self.classes) if num_gt_classes is None else int(num_gt_classes)
        )
        self.ignore_index = ignore_index
        self.worst_k = worst_k
        self.average = average

    @property
    def method(self):
        return "faseg"


class FASegEvaluation(fous.SegmentationEvaluation):
    """Pixelwise segmentation evaluation whose ground truth and prediction classes
    are matched by name (FiftyOne's ``"simple"`` method needs equal pixel values).

    Args:
        config: a :class:`FASegEvaluationConfig`
    """

    def evaluate_samples(
        self, samples, eval_key=None, mask_targets=None, progress=None
    ):
        if mask_targets is not None:
            warnings.warn(
                "mask_targets is ignored by the FA-Seg evaluation: classes come from "
                "the fields' mask_targets, matched by name"
            )

        config = self.config
        pred_field = config.pred_field
        gt_field = config.gt_field
        labels = list(config.classes) + [UNNAMED]
        num_classes = len(labels)
        unnamed = num_classes - 1
        gt_map = dict(map(tuple, config.gt_values))
        pred_map = dict(map(tuple, config.pred_values))
        compute_dice = config.compute_dice
        values = list(range(num_classes))

        save = eval_key is not None
        if save:
            acc_field = "%s_accuracy" % eval_key
            pre_field = "%s_precision" % eval_key
            rec_field = "%s_recall" % eval_key
            dice_field = "%s_dice" % eval_key

        confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
        matches = []
        unknown_gt = set()
        no_prediction = 0

        _samples = samples.select_fields([gt_field, pred_field])
        logger.info("Evaluating segmentations...")
        for sample in _samples.iter_samples(progress=progress, autosave=save):
            gt_seg = sample[gt_field]
            if gt_seg is None or not gt_seg.has_mask:
                warnings.warn("Skipping sample with missing ground truth mask")
                continue

            pred_seg = sample[pred_field]
            if pred_seg is None or not pred_seg.has_mask:
                no_prediction += 1
                continue

            gt_mask = label_mask(gt_seg, gt_field, sample.id)
            pred_mask = label_mask(pred_seg, pred_field, sample.id)

            gt = fm.remap(gt_mask, gt_map, default=-1)
            pred = fm.remap(pred_mask, pred_map, default=unnamed)
            lost = (gt < 0) & (gt_mask != config.ignore_index)
            if lost.any():
                unknown_gt.update(np.unique(gt_mask[lost]).tolist())

            conf = fm.confusion_matrix(gt, pred, num_classes, ignore_index=None)
            confusion += conf

            for i, j in zip(*np.nonzero(conf)):
                matches.append(
                    (labels[i], labels[j], int(conf[i, j]), gt_seg.id, pred_seg.id)
                )

            if save:
                acc, pre, rec = fous._compute_accuracy_precision_recall(
                    conf, values, config.average
                )
                sample[acc_field] = acc
                sample[pre_field] = pre
                sample[rec_field] = rec
                if compute_dice:
                    sample[dice_field] = fous._compute_dice_score(conf)

        if no_prediction:
            warnings.warn(
                "%d samples without a '%s' mask (e.g. failed ones: see '%s_error') were left out "
                "of the evaluation, which can raise the mIoU: evaluate view.exists('%s') to say "
                "so explicitly" % (no_prediction, pred_field, pred_field, pred_field)
            )

        if unknown_gt:
            warnings.warn(
                "Ground truth pixel values %s of '%s' are not in its mask_targets and "
                "were ignored like %d: name them in dataset.mask_targets['%s'] to "
                "evaluate them" % (sorted(unknown_gt), gt_field, config.ignore_index, gt_field)
            )

        if not confusion[:, unnamed].any():
            confusion = confusion[:unnamed, :unnamed]
            labels = labels[:unnamed]

        return FASegResults(
            samples,
            config,
            eval_key,
            confusion,
            labels,
            matches=matches,
            missing=labels[0],
            backend=self,
        )

    def rename(self, samples, eval_key, new_eval_key):
        super().rename(samples, eval_key, new_eval_key)

        dataset = samples._dataset
        old_field = "%s_miou" % eval_key
        if dataset.has_sample_field(old_field):
            # the metric operator was not available to rename its own field
            dataset.rename_sample_field(old_field, "%s_miou" % new_eval_key)

        if dataset.has_saved_view(_worst_view_name(eval_key)):
            dataset.delete_saved_view(_worst_view_name(eval_key))
            _save_worst_view(dataset, new_eval_key, self.config.worst_k)

    def cleanup(self, samples, eval_key):
        super().cleanup(samples, eval_key)

        dataset = samples._dataset
        if dataset.has_sample_field("%s_miou" % eval_key):
            # the metric operator was not available to delete its own field
            dataset.delete_sample_field("%s_miou" % eval_key)

        if dataset.has_saved_view(_worst_view_name(eval_key)):
            dataset.delete_saved_view(_worst_view_name(eval_key))


class FASegResults(fous.SegmentationResults):
    """Results of :func:`evaluate_faseg`: FiftyOne's segmentation results (its
    ``report()``, ``print_report()``, ``plot_confusion_matrix()`` and the App's panel
    work as usual) plus IoU.

    The classes in the mean are the first ``num_gt_classes`` of :attr:`classes` (the
    ground truth classes); predicted classes without a ground truth counterpart come
    after them.
    """

    @property
    def confusion(self):
        """The pixel confusion matrix (rows: ground truth, columns: prediction)."""
        return self.pixel_confusion_matrix

    @property
    def num_gt_classes(self):
        """The number of ground truth classes (the classes of the mean)."""
        n = getattr(self.config, "num_gt_classes", None)
        return len(self.classes) if n is None else min(n, len(self.classes))

    @property
    def iou(self):
        """Per-class IoU as an array aligned with :attr:`classes` (``nan`` where
        the class's union is empty)."""
        return fm.iou_per_class(self.confusion)

    @property
    def class_iou(self):
        """A dict mapping each ground truth class with a non-empty union to its IoU:
        the classes whose mean is :attr:`miou`."""
        n = self.num_gt_classes
        return {
            c: float(v)
            for c, v in zip(self.classes[:n], self.iou[:n])
            if not np.isnan(v)
        }

    @property
    def miou(self):
        """The dataset mIoU in ``[0, 1]`` (``nan`` if no pixel was counted)."""
        return fm.mean_iou(self.confusion, self.num_gt_classes)

    def iou_report(self):
        """Returns a dict mapping every class to a dict with its ``iou`` (None if its
        union is empty), ``gt_pixels``, ``pred_pixels`` and ``in_mean``."""
        conf = self.confusion
        iou = self.iou
        n = self.num_gt_classes
        report = {}
        for k, c in enumerate(self.classes):
            report[c] = {
                "iou": None if np.isnan(iou[k]) else float(iou[k]),
                "gt_pixels": int(conf[k, :].sum()),
                "pred_pixels": int(conf[:, k].sum()),
                "in_mean": bool(k < n and not np.isnan(iou[k])),
            }

        return report

    def markdown(self, digits=1):
        """Returns the per-class IoU and the mIoU (in %) as a Markdown table."""
        rows = [
            "| class | IoU (%) | GT pixels | predicted pixels |",
            "|---|---:|---:|---:|",
        ]
        fmt = "%%.%df" % digits
        for c, r in self.iou_report().items():
            if r["iou"] is None:
                iou = "–"
            elif r["in_mean"]:
                iou = fmt % (100 * r["iou"])
            else:
                iou = "(%s, not in mean)" % (fmt % (100 * r["iou"]))

            rows.append(
                "| %s | %s | %d | %d |" % (c, iou, r["gt_pixels"], r["pred_pixels"])
            )

        miou = self.miou
        rows.append(
            "| **mIoU** | **%s** | | |" % ("–" if np.isnan(miou) else fmt % (100 * miou))
        )
        return "\n".join(rows)

    def print_iou_report(self, digits=1):
        """Prints :meth:`markdown`."""
        print(self.markdown(digits=digits))


def _write_sample_miou(samples, results, eval_key, gt_field, num_gt_classes):
    classes = list(results.classes)
    index = {c: i for i, c in enumerate(classes)}
    k = len(classes)

    per_label = {}
    if results.ytrue_ids is not None:
        for yt, yp, w, gt_id in zip(
            results.ytrue, results.ypred, results.weights, results.ytrue_ids
        ):
            conf = per_label.get(gt_id)
            if conf is None:
                conf = per_label[gt_id] = np.zeros((k, k), dtype=np.int64)

            conf[index[yt], index[yp]] += int(w)

    values = []
    for label_id in samples.values(gt_field + ".id"):
        conf = per_label.get(label_id)
        miou = np.nan if conf is None else fm.mean_iou(conf, num_gt_classes)
        values.append(None if np.isnan(miou) else float(miou))

    field = "%s_miou" % eval_key
    dataset = samples._dataset
    if not dataset.has_sample_field(field):
        dataset.add_sample_field(field, fof.FloatField)

    samples.set_values(field, values)


def _save_worst_view(samples, eval_key, worst_k):
    field = "%s_miou" % eval_key
    dataset = samples._dataset
    if not dataset.has_sample_field(field):
        return

    view = samples.exists(field).sort_by(field)
    if worst_k:
        view = view.limit(worst_k)

    dataset.save_view(
        _worst_view_name(eval_key),
        view,
        description="Samples of lowest mIoU in evaluation '%s', worst first" % eval_key,
        overwrite=True,
    )


def _worst_view_name(eval_key):
    return "%s_worst" % eval_key


def _get_miou_metric():
    try:
        return foo.get_operator(MIOU_METRIC_URI)
    except Exception:
        logger.warning(
            "The '%s' plugin was not found in FIFTYONE_PLUGINS_DIR: the mIoU is "
            "computed without its metric operator",
            PLUGIN_NAME,
        )
        return None


def _canonicalizer(vocabulary):
    if vocabulary is not None and not callable(getattr(vocabulary, "canonical", None)):
        raise TypeError(
            "vocabulary must have a method canonical(name) -> str | None, got %s"
            % type(vocabulary).__name__
        )

    def canon(name):
        name = str(name)
        if vocabulary is not None:
            canonical = vocabulary.canonical(name)
            if canonical is not None:
                name = str(canonical)

        return " ".join(name.split()).lower()

    return canon

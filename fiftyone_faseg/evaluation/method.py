"""The FA-Seg evaluation method: a FiftyOne ``"segmentation"`` evaluation whose classes are
matched by name, with mIoU and per-sample outputs computed as each sample is read.

Memory does not grow with the number of samples: the samples' masks are streamed from the
database, each sample's confusion matrix lives only while that sample is processed, its
outputs are written in batches (:class:`fiftyone_faseg.evaluation.outputs.SampleWriter`),
and the results keep the dataset matrix and per-class counters. Pass
``store_matches=True`` for FiftyOne's per-sample matches (the Model Evaluation panel's
confusion-matrix cells then open their samples), which grow with the dataset.
"""

import contextlib
import gc
import logging
import warnings

import numpy as np

import fiftyone.core.utils as fou
import fiftyone.utils.eval.segmentation as fous

import fiftyone_faseg.metrics as fm

from ..constants import IGNORE_INDEX, operator_uri
from . import outputs, per_sample
from .reading import iter_docs, read_mask
from .results import FASegResults, miou_metric
from .matching import UNNAMED, normalize

logger = logging.getLogger(__name__)

MIOU_METRIC_URI = operator_uri("miou")


class FASegEvaluationConfig(fous.SegmentationEvaluationConfig):
    """Configuration of :class:`FASegEvaluation`; built by
    :func:`fiftyone_faseg.evaluation.evaluate_faseg`.

    Args:
        pred_field: the name of the predicted segmentation field
        gt_field: the name of the ground truth segmentation field
        classes (None): the class names (see
            :func:`fiftyone_faseg.evaluation.match_classes`)
        gt_values (None): ``[pixel value, class index]`` pairs of the ground truth
        pred_values (None): ``[pixel value, class index]`` pairs of the prediction
        num_gt_classes (None): the number of ground truth classes, which come first
            in ``classes`` and are the classes of the mean
        name_index (None): ``{normalized name: class index}`` for matching each
            sample's candidate classes
        aliases (None): ``{name: canonical name}`` of the vocabulary the classes were
            matched with (a re-evaluation matches names the same way)
        ignore_index (255): the ground truth value that is ignored
        per_class (True): write ``<eval_key>_classes`` and ``<eval_key>_confusions``
        error_masks (True): write the ``<eval_key>_errors`` overlay
        store_matches (False): keep FiftyOne's per-sample matches in the results
        pred_revision (None): the revision of the prediction field's FA-Seg run record
            when the evaluation started (a later one means the evaluation is stale)
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
        name_index=None,
        aliases=None,
        ignore_index=IGNORE_INDEX,
        per_class=True,
        error_masks=True,
        store_matches=False,
        pred_revision=None,
        worst_k=outputs.DEFAULT_WORST_K,
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
        self.num_gt_classes = len(self.classes) if num_gt_classes is None else int(num_gt_classes)
        self.name_index = dict(name_index or {})
        self.aliases = dict(aliases or {})
        self.ignore_index = ignore_index
        self.per_class = bool(per_class)
        self.error_masks = bool(error_masks)
        self.store_matches = bool(store_matches)
        self.pred_revision = pred_revision
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

    def register_samples(self, samples, eval_key):
        if eval_key is not None:
            outputs.declare_fields(samples._dataset, eval_key, self.config)

    def get_fields(self, samples, eval_key, include_custom_metrics=True):
        fields = list(outputs.field_names(eval_key, self.config).values())
        if include_custom_metrics:
            fields.extend(self.get_custom_metric_fields(samples, eval_key))
        return fields

    def rename(self, samples, eval_key, new_eval_key):
        outputs.rename_outputs(samples._dataset, eval_key, new_eval_key, self.config)
        self.rename_custom_metrics(samples, eval_key, new_eval_key)
        samples._rename_sidebar_group(eval_key, new_eval_key)

    def cleanup(self, samples, eval_key):
        outputs.delete_outputs(samples._dataset, eval_key, self.config)
        self.cleanup_custom_metrics(samples, eval_key)
        samples._delete_empty_sidebar_group(eval_key)

    def evaluate_samples(self, samples, eval_key=None, mask_targets=None, progress=None):
        if mask_targets is not None:
            warnings.warn(
                "mask_targets is ignored by the FA-Seg evaluation: classes come from "
                "the fields' mask_targets, matched by name"
            )

        config = self.config
        pred_field, gt_field = config.pred_field, config.gt_field
        labels = list(config.classes) + [UNNAMED]
        num_classes = len(labels)
        unnamed = num_classes - 1
        gt_map = fm.Remapper(dict(map(tuple, config.gt_values)), default=-1)
        pred_map = fm.Remapper(dict(map(tuple, config.pred_values)), default=unnamed)
        names = dict(config.name_index)
        cand_field = pred_field + "_candidates" if samples.has_field(pred_field + "_candidates") else None
        fields = outputs.field_names(eval_key, config) if eval_key is not None else {}

        confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
        recall = CandidateRecall(num_classes, config.num_gt_classes)
        counts = dict(evaluated=0, no_prediction=0, no_ground_truth=0)
        matches = [] if config.store_matches else None
        unknown_gt = set()

        logger.info("Evaluating segmentations...")
        writer = outputs.SampleWriter(samples._dataset) if fields else contextlib.nullcontext()
        with _gc_paused(), writer, fou.ProgressBar(total=samples.count(), progress=progress) as pb:
            for doc in pb(iter_docs(samples, gt_field, pred_field, cand_field)):
                gt_mask = read_mask(doc.get(gt_field), gt_field, doc["_id"])
                if gt_mask is None:
                    counts["no_ground_truth"] += 1
                    continue
                pred_mask = read_mask(doc.get(pred_field), pred_field, doc["_id"])
                if pred_mask is None:
                    counts["no_prediction"] += 1
                    continue

                gt = gt_map(gt_mask)
                lost = (gt < 0) & (gt_mask != config.ignore_index)
                if lost.any():
                    unknown_gt.update(np.unique(gt_mask[lost]).tolist())
                pred = fm.resize_nearest(pred_map(pred_mask), gt.shape)

                conf = fm.confusion_matrix(gt, pred, num_classes, ignore_index=None)
                confusion += conf
                counts["evaluated"] += 1

                if cand_field is not None:
                    recall.add(conf, _candidate_indices(doc.get(cand_field), names))

                if matches is not None:
                    gt_id, pred_id = str(doc[gt_field]["_id"]), str(doc[pred_field]["_id"])
                    for i, j in zip(*np.nonzero(conf)):
                        matches.append((labels[i], labels[j], int(conf[i, j]), gt_id, pred_id))

                if fields:
                    writer.set(doc["_id"], _sample_values(fields, conf, gt, pred, labels, config))

        _warn(counts, unknown_gt, config)

        if not confusion[:, unnamed].any():
            confusion = confusion[:unnamed, :unnamed]
            labels = labels[:unnamed]

        miou = fm.mean_iou(confusion, config.num_gt_classes)
        results = FASegResults(
            samples,
            config,
            eval_key,
            confusion,
            labels,
            matches=matches,
            missing=labels[0],
            custom_metrics=None if np.isnan(miou) else {MIOU_METRIC_URI: miou_metric(miou)},
            summary=dict(
                counts,
                candidate_recall=recall.as_dict(labels) if cand_field else None,
                candidates_field=cand_field,
            ),
            backend=self,
        )
        if fields:
            outputs.finish_fields(samples, eval_key, config, worst_k=config.worst_k)
        return results


class CandidateRecall(object):
    """Per ground truth class: in how many samples it is present, and in how many of
    those it was among the sample's candidate classes."""

    def __init__(self, num_classes, num_gt_classes):
        self.present = np.zeros(num_classes, np.int64)
        self.proposed = np.zeros(num_classes, np.int64)
        self.num_gt_classes = num_gt_classes

    def add(self, conf, candidates):
        if candidates is None:
            return
        present = np.flatnonzero(conf[1 : self.num_gt_classes].sum(axis=1)) + 1
        self.present[present] += 1
        self.proposed[[k for k in present if k in candidates]] += 1

    def as_dict(self, labels):
        return {
            labels[k]: {"samples": int(self.present[k]), "proposed": int(self.proposed[k])}
            for k in range(1, self.num_gt_classes)
            if self.present[k]
        }


@contextlib.contextmanager
def _gc_paused():
    """No cyclic garbage collection while the loop makes thousands of short-lived label
    documents (freed by reference counting): each collection would walk every object of
    the process."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _candidate_indices(candidates, names):
    """Class indices of a sample's candidates (a raw Classifications document)."""
    if candidates is None:
        return None
    return {names.get(normalize(c.get("label"))) for c in candidates.get("classifications") or []} - {None}


def _sample_values(fields, conf, gt, pred, labels, config):
    """``{field: database value}`` of one sample's outputs."""
    acc, pre, rec = accuracy_precision_recall(conf, config.average)
    values = {
        fields["accuracy"]: acc,
        fields["precision"]: pre,
        fields["recall"]: rec,
        fields["miou"]: per_sample.sample_miou(conf, config.num_gt_classes),
    }
    if "dice" in fields:
        values[fields["dice"]] = fous._compute_dice_score(conf)
    if "classes" in fields:
        values[fields["classes"]] = per_sample.class_doc(conf, labels, config.num_gt_classes)
        values[fields["confusions"]] = per_sample.confusion_doc(conf, labels)
    if "errors" in fields:
        values[fields["errors"]] = per_sample.error_doc(gt, pred, conf)
    return values


def accuracy_precision_recall(conf, average="micro"):
    """FiftyOne's per-sample ``accuracy``/``precision``/``recall`` of a segmentation
    evaluation (background, class 0, is the "missing" class), in numpy for
    ``average="micro"`` (FiftyOne's own, through sklearn, otherwise)."""
    if average != "micro":
        return fous._compute_accuracy_precision_recall(conf, list(range(len(conf))), average)

    support = conf[1:].sum()
    if support == 0:
        return None, None, None
    tp = np.trace(conf) - conf[0, 0]
    predicted = conf[:, 1:].sum()
    accuracy = tp / (conf.sum() - conf[0, 0])
    precision = tp / predicted if predicted else 0.0
    return float(accuracy), float(precision), float(tp / support)


def _warn(counts, unknown_gt, config):
    if counts["no_ground_truth"]:
        warnings.warn(
            "%d samples without a '%s' mask were skipped" % (counts["no_ground_truth"], config.gt_field)
        )
    if counts["no_prediction"]:
        warnings.warn(
            "%d samples without a '%s' mask (e.g. failed ones: see '%s_error') were left out "
            "of the evaluation, which can raise the mIoU: evaluate view.exists('%s') to say "
            "so explicitly"
            % (counts["no_prediction"], config.pred_field, config.pred_field, config.pred_field)
        )
    if unknown_gt:
        warnings.warn(
            "Ground truth pixel values %s of '%s' are not in its mask_targets and "
            "were ignored like %d: name them in dataset.mask_targets['%s'] to "
            "evaluate them" % (sorted(unknown_gt), config.gt_field, config.ignore_index, config.gt_field)
        )

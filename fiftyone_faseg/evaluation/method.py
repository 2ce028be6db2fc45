"""The FA-Seg evaluation method: a FiftyOne ``"segmentation"`` evaluation whose classes are
matched by name, with mIoU and per-sample outputs computed as each sample is read.

It can be run through FiftyOne's own API::

    dataset.evaluate_segmentations("faseg", gt_field="ground_truth", eval_key="ev",
                                   method=FASegEvaluationConfig)

The config holds only the caller's choices; the classes are matched (from the two fields'
``mask_targets``) when the samples are evaluated. The run is **registered only once every
sample is evaluated**: everything is checked first (the outputs' names, the class names,
the first masks' format), an existing run of the key is then replaced, and if anything
fails midway what this run wrote is removed and the key is left unregistered.

Memory does not grow with the number of samples: the samples' masks are streamed from the
database, each sample's confusion matrix lives only while that sample is processed, its
outputs are written in batches (:class:`fiftyone_faseg.evaluation.outputs.SampleWriter`),
and the results keep the dataset matrix and per-class counters.
"""

import contextlib
import logging
import warnings

import numpy as np

import fiftyone.core.fields as fof
import fiftyone.core.utils as fou
import fiftyone.utils.eval.segmentation as fous

import fiftyone_faseg.metrics as fm

from ..constants import IGNORE_INDEX, MIOU_METRIC_URI
from ..fields import candidates_field, error_field, get_mask_targets
from ..run.settings import RunRecord
from . import outputs, per_sample
from .colors import set_error_colors
from ..matching import UNNAMED, Aliases, is_rgb, match_classes, normalize
from ..masks import MaskError, read_mask
from .reading import iter_docs
from .results import FASegResults, as_percent, miou_metric

logger = logging.getLogger(__name__)

class FASegEvaluationConfig(fous.SegmentationEvaluationConfig):
    """Configuration of :class:`FASegEvaluation`.

    Args:
        pred_field: the name of the predicted segmentation field
        gt_field: the name of the ground truth segmentation field
        aliases (None): ``{name: canonical name}`` of class-name synonyms (see
            :func:`fiftyone_faseg.evaluation.match_classes`); names are otherwise
            compared lowercased and stripped
        ignore_index (255): the ground truth value that is ignored (integer masks)
        per_class (True): write ``<eval_key>_classes`` and ``<eval_key>_confusions``
            (FiftyOne's Model Evaluation panel opens a class's or a confusion cell's
            samples from them)
        error_masks (True): write the ``<eval_key>_errors`` overlay
        worst_k (25): the size of the ``<eval_key>_worst`` saved view
        average ("micro"): the averaging of FiftyOne's per-sample precision and
            recall fields
        compute_dice (False): whether to compute the Dice coefficient per sample
        custom_metrics (None): a list of custom metrics to compute or dict mapping
            metric names to kwargs dicts

    Set by the evaluation, and saved with its run: ``pred_revision`` (the revision of
    the prediction field's FA-Seg run record when it was evaluated: a later one means
    the evaluation is stale) and the outputs it owns (``outputs``, ``worst_view``,
    ``indexes``; see :func:`fiftyone_faseg.evaluation.outputs.owned`).
    """

    def __init__(
        self,
        pred_field,
        gt_field,
        aliases=None,
        ignore_index=IGNORE_INDEX,
        per_class=True,
        error_masks=True,
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
        self.aliases = dict(aliases or {})
        self.ignore_index = ignore_index
        self.per_class = bool(per_class)
        self.error_masks = bool(error_masks)
        self.worst_k = worst_k
        self.average = average
        self.pred_revision = kwargs.get("pred_revision")

    @property
    def method(self):
        return "faseg"


class FASegEvaluation(fous.SegmentationEvaluation):
    """Pixelwise segmentation evaluation whose ground truth and prediction classes
    are matched by name (FiftyOne's ``"simple"`` method needs equal pixel values).

    Args:
        config: a :class:`FASegEvaluationConfig`
    """

    def register_run(self, samples, key, overwrite=True, cleanup=True):
        """Checks that the run can be stored under ``key`` (and that its outputs are free
        or the key's own) without changing anything: the run is registered by
        :meth:`evaluate_samples` once every sample is evaluated."""
        if key is None:
            return
        self.validate_run(samples, key, overwrite=overwrite)
        outputs.check_free(samples._dataset, key, outputs.field_names(key, self.config),
                           reads=(self.config.pred_field, self.config.gt_field))

    def register_samples(self, samples, eval_key):
        pass  # the fields are declared once every check passed (evaluate_samples)

    def get_fields(self, samples, eval_key, include_custom_metrics=True):
        fields = list(outputs.owned(eval_key, self.config)["fields"].values())
        if include_custom_metrics:
            fields.extend(self.get_custom_metric_fields(samples, eval_key))
        return fields

    def rename(self, samples, eval_key, new_eval_key):
        outputs.rename_outputs(samples, eval_key, new_eval_key, self.config)
        self.update_run_config(samples, eval_key, self.config)
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
        dataset = samples._dataset
        # everything is checked before anything changes
        gt_targets = get_mask_targets(samples, config.gt_field)
        pred_targets = get_mask_targets(samples, config.pred_field)
        rgb = (is_rgb(gt_targets), is_rgb(pred_targets))
        ignore_index = None if rgb[0] else config.ignore_index
        matching = match_classes(gt_targets, pred_targets, vocabulary=Aliases(config.aliases),
                                 ignore_index=ignore_index)
        _check_first_masks(samples, config, rgb)
        record = RunRecord.read(dataset, config.pred_field)
        config.pred_revision = record.revision if record is not None else None

        # A run already stored under the key stays, record and outputs, until this one is
        # complete: this one writes under a working key's names, then takes the key's
        written = eval_key  # the key whose names this run's outputs have
        replacing = eval_key is not None and eval_key in dataset.list_evaluations()
        if replacing:
            written = outputs.working_key(dataset, eval_key)
            outputs.check_free(dataset, written, outputs.field_names(written, config),
                               reads=(config.pred_field, config.gt_field), view=None)
        if eval_key is not None:
            outputs.declare_fields(dataset, written, config)
        try:
            results = self._evaluate(samples, eval_key, written, matching, rgb, ignore_index, progress)
            if replacing:
                self.delete_run(samples, eval_key)  # the old record and outputs, now that the new ones exist
                outputs.take_names(dataset, written, eval_key, config)
                written = eval_key
            if eval_key is not None:
                outputs.finish_fields(samples, eval_key, config, worst_k=config.worst_k)
                super().register_run(samples, eval_key, overwrite=False, cleanup=False)
                set_error_colors(dataset, eval_key)  # the App draws the overlay in four colours
        except BaseException:
            if eval_key is not None:
                outputs.delete_outputs(dataset, written, config)  # what this run wrote, nothing else
            raise
        return results

    def _evaluate(self, samples, eval_key, fields_key, matching, rgb, ignore_index, progress):
        """The evaluation of ``samples``, whose per-sample outputs are written under the
        names of ``fields_key`` (the key itself, or the working key of a run that replaces it)."""
        config = self.config
        pred_field, gt_field = config.pred_field, config.gt_field
        labels = list(matching["classes"]) + [UNNAMED]
        num_classes = len(labels)
        num_gt_classes = matching["num_gt_classes"]
        unnamed = num_classes - 1
        gt_map = fm.Remapper(dict(map(tuple, matching["gt_values"])), default=-1)
        pred_map = fm.Remapper(dict(map(tuple, matching["pred_values"])), default=unnamed)
        names = matching["name_index"]
        cand_field = candidates_field(pred_field)
        cand_field = cand_field if samples.has_field(cand_field) else None
        fields = outputs.field_names(fields_key, config) if fields_key is not None else {}

        confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
        recall = CandidateRecall(num_classes, num_gt_classes)
        presence = ClassPresence(num_classes)
        counts = dict(evaluated=0, no_prediction=0, no_ground_truth=0, unreadable=0)
        unreadable = []
        unknown_gt = set()

        logger.info("Evaluating segmentations...")
        writer = outputs.SampleWriter(samples._dataset) if fields else contextlib.nullcontext()
        with writer, fou.ProgressBar(total=samples.count(), progress=progress) as pb:
            for doc in pb(iter_docs(samples, gt_field, pred_field, cand_field)):
                try:
                    gt_mask = read_mask(doc.get(gt_field), gt_field, doc["_id"], rgb=rgb[0])
                    pred_mask = None if gt_mask is None else read_mask(
                        doc.get(pred_field), pred_field, doc["_id"], rgb=rgb[1])
                except MaskError as e:
                    counts["unreadable"] += 1
                    if len(unreadable) < 3:
                        unreadable.append(str(e))
                    continue
                if gt_mask is None:
                    counts["no_ground_truth"] += 1
                    continue
                if pred_mask is None:
                    counts["no_prediction"] += 1
                    continue

                gt = gt_map(gt_mask)
                lost = gt < 0
                if ignore_index is not None:
                    lost &= gt_mask != ignore_index
                if lost.any():
                    unknown_gt.update(np.unique(gt_mask[lost]).tolist())
                pred = fm.resize_nearest(pred_map(pred_mask), gt.shape)

                conf = fm.confusion_matrix(gt, pred, num_classes, ignore_index=None)
                confusion += conf
                presence.add(conf)
                counts["evaluated"] += 1

                if cand_field is not None:
                    recall.add(conf, _candidate_indices(doc.get(cand_field), names))

                if fields:
                    writer.set(doc["_id"], _sample_values(fields, conf, gt, pred, labels, num_gt_classes, config))

        if not counts["evaluated"] and counts["unreadable"]:
            raise ValueError("No sample could be evaluated: %d have masks that cannot be read, e.g. %s"
                             % (counts["unreadable"], unreadable[0]))
        _warn(counts, unreadable, unknown_gt, rgb[0], config)

        if not confusion[:, unnamed].any():
            confusion = confusion[:unnamed, :unnamed]
            labels = labels[:unnamed]

        results = FASegResults(
            samples,
            config,
            eval_key,
            confusion,
            labels,
            missing=labels[0],
            num_gt_classes=num_gt_classes,
            summary=dict(
                counts,
                unreadable_examples=unreadable,
                class_samples=presence.as_dict(labels),
                candidate_recall=recall.as_dict(labels) if cand_field else None,
                candidates_field=cand_field,
            ),
            backend=self,
        )
        if not np.isnan(results.miou):
            results.custom_metrics = {MIOU_METRIC_URI: miou_metric(results.miou)}
        return results


def mask_format_problem(samples, pred_field, gt_field):
    """Why the masks of ``pred_field`` and ``gt_field`` cannot be evaluated, judged on the
    first sample that has both (an RGB mask without hex ``mask_targets``, a float mask,
    ...), or None when they can: what a form shows before the evaluation runs.

    Args:
        samples: a :class:`fiftyone.core.collections.SampleCollection`
        pred_field: the predicted Segmentation field
        gt_field: the ground truth Segmentation field
    """
    try:
        rgb = (is_rgb(get_mask_targets(samples, gt_field)), is_rgb(get_mask_targets(samples, pred_field)))
        _check_first_masks(samples, FASegEvaluationConfig(pred_field, gt_field), rgb)
    except ValueError as e:  # MaskError included
        return str(e)
    return None


def _check_first_masks(samples, config, rgb):
    """Raises if the first sample with both masks has one FA-Seg cannot read as class
    values (an RGB mask without hex mask_targets, a float mask, ...), before anything
    is written; a missing file is left to the per-sample count."""
    first = samples.exists(config.gt_field).exists(config.pred_field).limit(1)
    for doc in iter_docs(first, config.gt_field, config.pred_field, None):
        for field, is_rgb_field in ((config.gt_field, rgb[0]), (config.pred_field, rgb[1])):
            try:
                read_mask(doc.get(field), field, doc["_id"], rgb=is_rgb_field)
            except MaskError as e:
                if not e.missing:
                    raise


class ClassPresence(object):
    """Per class: in how many samples it is in the ground truth, in the prediction, and
    in either."""

    def __init__(self, num_classes):
        self.gt = np.zeros(num_classes, np.int64)
        self.pred = np.zeros(num_classes, np.int64)
        self.either = np.zeros(num_classes, np.int64)

    def add(self, conf):
        gt, pred = conf.sum(axis=1) > 0, conf.sum(axis=0) > 0
        self.gt += gt
        self.pred += pred
        self.either += gt | pred

    def as_dict(self, labels):
        return {c: {"samples": int(self.either[k]), "gt_samples": int(self.gt[k]), "pred_samples": int(self.pred[k])}
                for k, c in enumerate(labels)}


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


def _candidate_indices(candidates, names):
    """Class indices of a sample's candidates (a raw Classifications document)."""
    if candidates is None:
        return None
    return {names.get(normalize(c.get("label"))) for c in candidates.get("classifications") or []} - {None}


def _sample_values(fields, conf, gt, pred, labels, num_gt_classes, config):
    """``{field: database value}`` of one sample's outputs."""
    acc, pre, rec = accuracy_precision_recall(conf, config.average)
    values = {
        fields["accuracy"]: acc,
        fields["precision"]: pre,
        fields["recall"]: rec,
        fields["miou"]: as_percent(per_sample.sample_miou(conf, num_gt_classes)),  # percent, as people read it
    }
    if "dice" in fields:
        values[fields["dice"]] = dice_score(conf)
    if "classes" in fields:
        values[fields["classes"]] = per_sample.class_doc(conf, labels, num_gt_classes)
        values[fields["confusions"]] = per_sample.confusion_doc(conf, labels)
    if "errors" in fields:
        values[fields["errors"]] = per_sample.error_doc(gt, pred, conf)
    return values


def dice_score(conf):
    """FiftyOne's per-sample ``dice`` of a segmentation evaluation: ``2 tp / (2 tp + fp + fn)``
    over every pixel, each off-diagonal pixel one false positive and one false negative."""
    tp = np.trace(conf)
    total = conf.sum()
    return float(tp / total) if total else float("nan")


def accuracy_precision_recall(conf, average="micro"):
    """FiftyOne's per-sample ``accuracy``/``precision``/``recall`` of a segmentation
    evaluation (background, class 0, is the "missing" class), in numpy for
    ``average="micro"`` (FiftyOne's own, through sklearn, otherwise)."""
    if average != "micro":
        metrics = fous.SegmentationResults(None, None, None, conf, list(range(len(conf))), missing=0).metrics(
            average=average)
        return (None, None, None) if metrics["support"] == 0 else (
            metrics["accuracy"], metrics["precision"], metrics["recall"])

    support = conf[1:].sum()
    if support == 0:
        return None, None, None
    tp = np.trace(conf) - conf[0, 0]
    predicted = conf[:, 1:].sum()
    accuracy = tp / (conf.sum() - conf[0, 0])
    precision = tp / predicted if predicted else 0.0
    return float(accuracy), float(precision), float(tp / support)


def _warn(counts, unreadable, unknown_gt, rgb, config):
    if counts["no_ground_truth"]:
        warnings.warn(
            "%d samples without a '%s' mask were skipped" % (counts["no_ground_truth"], config.gt_field)
        )
    if counts["no_prediction"]:
        warnings.warn(
            "%d samples without a '%s' mask (e.g. failed ones: see '%s') were left out "
            "of the evaluation, which can raise the mIoU: evaluate view.exists('%s') to say "
            "so explicitly"
            % (counts["no_prediction"], config.pred_field, error_field(config.pred_field), config.pred_field)
        )
    if counts["unreadable"]:
        warnings.warn(
            "%d samples whose masks cannot be read were left out of the evaluation: %s"
            % (counts["unreadable"], "; ".join(unreadable))
        )
    if unknown_gt:
        values = [fof.int_to_hex(v) for v in sorted(unknown_gt)] if rgb else sorted(unknown_gt)
        ignored = "" if rgb else " like %d" % config.ignore_index
        warnings.warn(
            "Ground truth pixel values %s of '%s' are not in its mask_targets and "
            "were ignored%s: name them in dataset.mask_targets['%s'] to "
            "evaluate them" % (values, config.gt_field, ignored, config.gt_field)
        )

"""mIoU of a run at many background thresholds, from its stored score maps, without the model.

For every sample that has a mask, its ``<label_field>_scores`` file is read once, the
scores are upsampled once (:func:`fiftyone_faseg.protocol.scoring.upsampled_best`), and
each threshold's label map is compared with the ground truth. Classes are matched by
name exactly as :func:`fiftyone_faseg.evaluation.evaluate_faseg` matches them (score
class → the label field's ``mask_targets`` value → ground truth class), so the sweep at
the run's threshold counts the same pixels as the evaluation of the stored masks; the
stored masks are counted in the same pass (``stored``) to check it.
"""

import logging

import numpy as np

from .. import metrics as fm
from ..evaluation import match_classes
from ..fields import get_mask_targets, int_targets, label_mask, scores_field
from ..storage import load_scores
from .importers import GT_FIELD
from .scoring import labels_at, upsampled_best

logger = logging.getLogger(__name__)

PAPER_THRESHOLDS = (0.40, 0.45, 0.50, 0.55, 0.60, 0.65)
UNNAMED = "(unnamed)"


class SweepResult(object):
    """Confusion matrices of a run: ``stored`` (its masks) and one per threshold.

    Attributes:
        classes: class names; the first ``num_gt_classes`` are the ground truth's
        num_gt_classes: the classes of the mean
        stored: the confusion matrix of the stored masks
        by_threshold: ``{threshold: confusion matrix}``
        num_samples: the samples counted
    """

    def __init__(self, classes, num_gt_classes, stored, by_threshold, num_samples):
        self.classes = classes
        self.num_gt_classes = num_gt_classes
        self.stored = stored
        self.by_threshold = by_threshold
        self.num_samples = num_samples

    def miou(self, threshold=None):
        """The mIoU in ``[0, 1]`` of the stored masks, or at ``threshold``."""
        conf = self.stored if threshold is None else self.by_threshold[threshold]
        return fm.mean_iou(conf, self.num_gt_classes)

    def class_iou(self, threshold=None):
        """``{class: IoU or None}`` of the ground truth classes (None: empty union)."""
        conf = self.stored if threshold is None else self.by_threshold[threshold]
        iou = fm.iou_per_class(conf)[: self.num_gt_classes]
        return {c: (None if np.isnan(v) else float(v)) for c, v in zip(self.classes, iou)}


def sweep(samples, label_field, thresholds, image_size, vocabulary=None, progress=None):
    """Confusion matrices of the stored masks and of the stored scores at each threshold.

    Example usage::

        result = sweep(view, "faseg_json", [0.4, 0.5, 0.55, 0.6], image_size=512)
        {t: result.miou(t) for t in result.by_threshold}

    Args:
        samples: a collection with ``ground_truth`` and ``label_field`` (and its
            ``_scores`` paths)
        label_field: the run's label field
        thresholds: background thresholds
        image_size: the model's image size of the run (the scores are upsampled to it)
        vocabulary (None): names' synonyms for matching (see :func:`match_classes`)
        progress (None): a FiftyOne progress setting

    Returns:
        a :class:`SweepResult`
    """
    matching = match_classes(get_mask_targets(samples, GT_FIELD), get_mask_targets(samples, label_field),
                             vocabulary=vocabulary)
    classes = list(matching["classes"]) + [UNNAMED]
    n = len(classes)
    unnamed = n - 1
    gt_map = dict(map(tuple, matching["gt_values"]))
    pred_map = dict(map(tuple, matching["pred_values"]))
    value_of = {name: value for value, name in int_targets(get_mask_targets(samples, label_field), "prediction").items()}
    thresholds = [float(t) for t in thresholds]

    stored = np.zeros((n, n), np.int64)
    by_threshold = {t: np.zeros((n, n), np.int64) for t in thresholds}
    score_paths = scores_field(label_field)
    view = samples.exists(label_field).select_fields([GT_FIELD, label_field, score_paths])
    count = 0
    for sample in view.iter_samples(progress=progress):
        if sample[GT_FIELD] is None:
            continue
        gt = fm.remap(label_mask(sample[GT_FIELD], GT_FIELD, sample.id), gt_map, default=-1)
        mask = label_mask(sample[label_field], label_field, sample.id)
        stored += fm.confusion_matrix(gt, fm.remap(mask, pred_map, default=unnamed), n, ignore_index=None)
        count += 1
        if not thresholds:
            continue
        if not sample[score_paths]:
            raise ValueError(
                "sample %s has a mask in '%s' but no score file in '%s': segment it again with "
                "overwrite to sweep thresholds" % (sample.id, label_field, score_paths)
            )
        scores, names = load_scores(sample[score_paths])
        lut = np.array([pred_map.get(0, 0)] + [pred_map.get(value_of.get(c, -1), unnamed) for c in names], np.int64)
        best, index = upsampled_best(scores, image_size)
        height, width = mask.shape[:2]
        for t in thresholds:
            labels = labels_at(best, index, t, len(names), width, height)
            by_threshold[t] += fm.confusion_matrix(gt, lut[labels], n, ignore_index=None)

    if not stored[:, unnamed].any() and not any(c[:, unnamed].any() for c in by_threshold.values()):
        classes = classes[:unnamed]
        stored = stored[:unnamed, :unnamed]
        by_threshold = {t: c[:unnamed, :unnamed] for t, c in by_threshold.items()}
    return SweepResult(classes, matching["num_gt_classes"], stored, by_threshold, count)

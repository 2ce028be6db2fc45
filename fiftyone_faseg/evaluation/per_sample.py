"""What an FA-Seg evaluation writes on each sample, computed from that sample's masks alone.

-   ``<eval_key>_miou``: the sample's mIoU (ground truth classes present), indexed so the
    App's grid can sort by it;
-   ``<eval_key>_classes``: :class:`fiftyone.core.labels.Classifications`, one per class
    present in the ground truth or the prediction, ``confidence`` = the sample's IoU of
    that class, with ``gt_pixels``, ``pred_pixels``, ``tp_pixels`` and ``in_mean``
    attributes ("label = person, confidence < 0.3" is a sidebar filter);
-   ``<eval_key>_confusions``: :class:`fiftyone.core.labels.Classifications`, one per
    (ground truth class, predicted class) pair that disagrees on some pixel, labelled
    ``"person → dog"``, with ``gt``, ``pred`` and ``pixels`` attributes and
    ``confidence`` = the share of the ground truth class's pixels predicted as ``pred``;
-   ``<eval_key>_errors``: a :class:`fiftyone.core.labels.Segmentation` at the ground
    truth's size whose values are :data:`ERROR_TARGETS` (pixels that are background on
    both sides, and ignored pixels, are 0: not drawn), with the pixel count of each
    kind as attributes.

Nothing here keeps anything beyond one sample: the evaluation writes these as it goes.
"""

import numpy as np

import fiftyone.core.labels as fol

import fiftyone_faseg.metrics as fm

CORRECT, WRONG_CLASS, MISSED, FALSE_ALARM = 1, 2, 3, 4
ERROR_TARGETS = {
    CORRECT: "correct",
    WRONG_CLASS: "wrong class",
    MISSED: "missed",
    FALSE_ALARM: "false alarm",
}
PAIR_SEPARATOR = " → "


def pair_label(gt_class, pred_class):
    """The label of a confusion pair, e.g. ``"person → dog"``."""
    return "%s%s%s" % (gt_class, PAIR_SEPARATOR, pred_class)


def sample_miou(conf, num_gt_classes):
    """The mIoU of one sample's confusion matrix (None when no class counts)."""
    value = fm.mean_iou(conf, num_gt_classes)
    return None if np.isnan(value) else value


def class_labels(conf, classes, num_gt_classes):
    """One :class:`fiftyone.core.labels.Classification` per class with pixels in the
    ground truth or the prediction of one sample (``conf`` rows: ground truth)."""
    gt_pixels = conf.sum(axis=1)
    pred_pixels = conf.sum(axis=0)
    tp = np.diag(conf)
    union = gt_pixels + pred_pixels - tp
    labels = []
    for k in np.flatnonzero(union):
        labels.append(
            fol.Classification(
                label=classes[k],
                confidence=float(tp[k] / union[k]),
                gt_pixels=int(gt_pixels[k]),
                pred_pixels=int(pred_pixels[k]),
                tp_pixels=int(tp[k]),
                in_mean=bool(k < num_gt_classes),
            )
        )
    return fol.Classifications(classifications=labels)


def confusion_labels(conf, classes):
    """One :class:`fiftyone.core.labels.Classification` per off-diagonal pair of one
    sample's confusion matrix, most pixels first."""
    gt_pixels = conf.sum(axis=1)
    off = conf.copy()
    np.fill_diagonal(off, 0)
    rows, cols = np.nonzero(off)
    order = np.argsort(-off[rows, cols], kind="stable")
    labels = []
    for i, j in zip(rows[order], cols[order]):
        labels.append(
            fol.Classification(
                label=pair_label(classes[i], classes[j]),
                confidence=float(off[i, j] / gt_pixels[i]),
                gt=classes[i],
                pred=classes[j],
                pixels=int(off[i, j]),
            )
        )
    return fol.Classifications(classifications=labels)


def error_mask(gt, pred):
    """The error overlay of one sample.

    Args:
        gt: ``(H, W)`` ground truth class indices, negative where ignored
        pred: ``(H, W)`` predicted class indices (already at the ground truth's size)

    Returns:
        a ``(H, W)`` uint8 array of :data:`ERROR_TARGETS` values (0 elsewhere)
    """
    valid = gt >= 0
    fg_gt = valid & (gt > 0)
    fg_pred = pred > 0
    out = np.zeros(gt.shape, np.uint8)
    out[fg_gt & fg_pred & (gt == pred)] = CORRECT
    out[fg_gt & fg_pred & (gt != pred)] = WRONG_CLASS
    out[fg_gt & ~fg_pred] = MISSED
    out[valid & (gt == 0) & fg_pred] = FALSE_ALARM
    return out


def error_label(gt, pred):
    """:func:`error_mask` as a :class:`fiftyone.core.labels.Segmentation` with the
    pixel count of each kind as attributes (``correct``, ``wrong_class``, ...)."""
    mask = error_mask(gt, pred)
    counts = np.bincount(mask.ravel(), minlength=len(ERROR_TARGETS) + 1)
    attributes = {name.replace(" ", "_"): int(counts[v]) for v, name in ERROR_TARGETS.items()}
    return fol.Segmentation(mask=mask, **attributes)

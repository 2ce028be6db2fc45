"""What an FA-Seg evaluation writes on each sample, computed from that sample's masks alone.

-   ``<eval_key>_miou``: the sample's mIoU (ground truth classes present) in percent (the
    evaluation converts :func:`sample_miou`), indexed so the App's grid can sort by it;
-   ``<eval_key>_classes``: :class:`fiftyone.core.labels.Classifications`, one per class
    present in the ground truth or the prediction, ``confidence`` = the sample's IoU of
    that class, with ``gt_pixels``, ``pred_pixels``, ``tp_pixels`` and ``in_mean``
    attributes ("label = person, confidence < 0.3" is a sidebar filter);
-   ``<eval_key>_confusions``: a list of embedded documents, one per (ground truth class,
    predicted class) pair that disagrees on some pixel, most pixels first: ``gt``,
    ``pred``, ``pixels`` and ``share`` (of the ground truth class's pixels predicted as
    ``pred``). A plain list, not labels: the grid does not draw it, and it is what
    :func:`fiftyone_faseg.evaluation.confusion_view` reads;
-   ``<eval_key>_errors``: a :class:`fiftyone.core.labels.Segmentation` at the ground
    truth's size whose values are :data:`ERROR_TARGETS` (pixels that are background on
    both sides, and ignored pixels, are 0: not drawn), with the pixel count of each
    kind as attributes (``correct``, ``wrong_class``, ``missed``, ``false_alarm``).

The values are built directly as the database documents FiftyOne stores, by
:mod:`fiftyone_faseg.store`'s fast path (the evaluation writes them in bulk as it goes:
building thousands of label objects per batch would cost more than the evaluation
itself); FiftyOne reads them back as usual.
"""

import functools

import numpy as np

import fiftyone_faseg.metrics as fm
from fiftyone_faseg import store

CORRECT, WRONG_CLASS, MISSED, FALSE_ALARM = 1, 2, 3, 4
ERROR_TARGETS = {
    CORRECT: "correct",
    WRONG_CLASS: "wrong class",
    MISSED: "missed",
    FALSE_ALARM: "false alarm",
}
CLASS_ATTRIBUTES = {"gt_pixels": int, "pred_pixels": int, "tp_pixels": int, "in_mean": bool}
PAIR_ATTRIBUTES = {"gt": str, "pred": str, "pixels": int, "share": float}
ERROR_ATTRIBUTES = {name.replace(" ", "_"): int for name in ERROR_TARGETS.values()}


def sample_miou(conf, num_gt_classes):
    """The mIoU of one sample's confusion matrix (None when no class counts)."""
    value = fm.mean_iou(conf, num_gt_classes)
    return None if np.isnan(value) else value


def class_doc(conf, classes, num_gt_classes):
    """``<eval_key>_classes`` of one sample (``conf`` rows: ground truth): one
    Classification per class with pixels in the ground truth or the prediction."""
    gt_pixels = conf.sum(axis=1)
    pred_pixels = conf.sum(axis=0)
    tp = np.diag(conf)
    union = gt_pixels + pred_pixels - tp
    present = np.flatnonzero(union)
    rows = zip(present.tolist(), (tp[present] / union[present]).tolist(), gt_pixels[present].tolist(),
               pred_pixels[present].tolist(), tp[present].tolist())
    return store.classifications_doc(
        store.classification_doc(classes[k], iou, gt_pixels=g, pred_pixels=p, tp_pixels=t, in_mean=k < num_gt_classes)
        for k, iou, g, p, t in rows
    )


def confusion_doc(conf, classes):
    """``<eval_key>_confusions`` of one sample: one document per off-diagonal pair of its
    confusion matrix, most pixels first."""
    rows, cols = np.nonzero(conf)
    off = rows != cols
    rows, cols = rows[off], cols[off]
    pixels = conf[rows, cols]
    order = np.argsort(-pixels, kind="stable")
    rows, cols, pixels = rows[order], cols[order], pixels[order]
    shares = (pixels / conf.sum(axis=1)[rows]).tolist()
    return [
        {"_cls": "DynamicEmbeddedDocument", "gt": classes[i], "pred": classes[j], "pixels": n, "share": share}
        for i, j, n, share in zip(rows.tolist(), cols.tolist(), pixels.tolist(), shares)
    ]


def error_mask(gt, pred, num_classes):
    """The error overlay of one sample.

    Args:
        gt: ``(H, W)`` ground truth class indices, negative where ignored
        pred: ``(H, W)`` predicted class indices in ``[0, num_classes)``, already at the
            ground truth's size
        num_classes: the number of classes (background is class 0)

    Returns:
        a ``(H, W)`` uint8 array of :data:`ERROR_TARGETS` values (0 elsewhere)
    """
    pair = np.where(gt >= 0, gt * num_classes + pred, 0)  # ignored pixels: (background, background)
    return _error_codes(num_classes)[pair]


@functools.lru_cache(maxsize=8)
def _error_codes(num_classes):
    """The overlay value of every (gt class, pred class) pair, flattened."""
    codes = np.full((num_classes, num_classes), WRONG_CLASS, np.uint8)
    np.fill_diagonal(codes, CORRECT)
    codes[1:, 0] = MISSED
    codes[0, 1:] = FALSE_ALARM
    codes[0, 0] = 0
    return codes.ravel()


def error_doc(gt, pred, conf):
    """``<eval_key>_errors`` of one sample: :func:`error_mask` as a Segmentation with
    the pixel count of each kind (from the sample's confusion matrix ``conf``, background
    first) as attributes."""
    fg = conf[1:, 1:]
    correct = int(np.trace(fg))
    counts = {
        "correct": correct,
        "wrong_class": int(fg.sum()) - correct,
        "missed": int(conf[1:, 0].sum()),
        "false_alarm": int(conf[0, 1:].sum()),
    }
    return store.segmentation_doc(error_mask(gt, pred, len(conf)), level=1, **counts)  # the fastest compression


def _label_id(cls):
    """A new label document ``{"_id", "_cls", "tags"}`` (:func:`fiftyone_faseg.store.label_doc`)."""
    return store.label_doc(cls)

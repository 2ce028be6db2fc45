"""Semantic segmentation metrics in pure numpy: pixel confusion matrices and mIoU.

The rule is the one of the FA-Seg paper's protocol (FASEG_REFERENCE.md §9) and of
MMSegmentation's ``IoUMetric``:

-   the confusion matrix is accumulated over **every pixel of every image** (rows =
    ground truth class, columns = predicted class) and IoU is computed once, at the
    end, from the summed counts: ``IoU_c = TP / (GT + Pred - TP)``;
-   ground truth pixels equal to ``ignore_index`` (255, VOC's void border) are not
    counted;
-   a prediction whose size differs from its ground truth is resized to the ground
    truth size with PIL's nearest rule, the one the pipeline resizes its masks with
    (:func:`resize_nearest`);
-   classes whose union is empty (absent from both ground truth and prediction) have
    no IoU (``nan``) and are left out of the mean.

Nothing here imports FiftyOne or torch, so the benchmark harness can use it as is.

Example usage::

    from fiftyone_faseg import metrics as fm

    conf = sum(fm.confusion_matrix(gt, pred, 21) for gt, pred in pairs)  # class indices
    print(fm.mean_iou(conf), fm.iou_per_class(conf))
"""

import numpy as np

from faseg_core.labels import resize_labels

from .constants import IGNORE_INDEX  # 255: ground truth left out of every count


def resize_nearest(mask, shape):
    """Resizes a 2D label mask to ``shape`` with PIL's nearest rule (pixel centres),
    for any integer dtype (:func:`faseg_core.labels.resize_labels`); labels are never
    blended.

    Args:
        mask: a ``(H, W)`` integer array
        shape: the target ``(h, w)``

    Returns:
        a ``(h, w)`` array of the same dtype
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(
            "Expected a 2D label mask, got shape %s; RGB masks are not supported"
            % (mask.shape,)
        )

    return resize_labels(mask, int(shape[1]), int(shape[0]))


def remap(mask, mapping, default=-1):
    """Maps the pixel values of a label mask through a ``{value: index}`` dict.

    Args:
        mask: an integer array
        mapping: a dict mapping pixel values to new values
        default (-1): the value given to pixels whose value is not in ``mapping``

    Returns:
        an ``int64`` array of the same shape
    """
    return Remapper(mapping, default)(mask)


class Remapper(object):
    """:func:`remap` with one mapping for many masks: uint8/uint16 masks go through a
    lookup table built once.

    Args:
        mapping: a dict mapping pixel values to new values
        default (-1): the value given to pixels whose value is not in ``mapping``
    """

    def __init__(self, mapping, default=-1):
        self.mapping = {int(k): int(v) for k, v in mapping.items()}
        self.default = default
        self._luts = {}

    def __call__(self, mask):
        mask = np.asarray(mask)
        if mask.size == 0:
            return np.full(mask.shape, self.default, dtype=np.int64)

        if mask.dtype.kind not in "iu":
            raise ValueError("Expected an integer label mask, got dtype %s" % mask.dtype)

        if mask.dtype.kind == "u" and mask.dtype.itemsize <= 2:
            return self._lut(mask.dtype.itemsize)[mask]

        values, inverse = np.unique(mask, return_inverse=True)
        mapped = np.array([self.mapping.get(int(v), self.default) for v in values], dtype=np.int64)
        return mapped[inverse].reshape(mask.shape)

    def _lut(self, itemsize):
        if itemsize not in self._luts:
            lut = np.full(256**itemsize, self.default, dtype=np.int64)
            for value, index in self.mapping.items():
                if 0 <= value < lut.size:
                    lut[value] = index
            self._luts[itemsize] = lut
        return self._luts[itemsize]


def confusion_matrix(gt, pred, num_classes, ignore_index=IGNORE_INDEX):
    """Pixel confusion matrix of one image (rows: ground truth, columns: prediction).

    ``pred`` is resized to the size of ``gt`` (nearest) when the two differ. Ground
    truth pixels equal to ``ignore_index`` or outside ``[0, num_classes)`` (e.g. the
    ``-1`` that :func:`remap` gives unknown values) are not counted.

    Args:
        gt: a ``(H, W)`` integer array of ground truth class indices
        pred: a ``(h, w)`` integer array of predicted class indices in
            ``[0, num_classes)``
        num_classes: the number of classes
        ignore_index (255): a ground truth value to ignore, or None

    Returns:
        a ``(num_classes, num_classes)`` ``int64`` array
    """
    gt = np.asarray(gt)
    pred = resize_nearest(pred, np.shape(gt))

    valid = (gt >= 0) & (gt < num_classes)
    if ignore_index is not None:
        valid &= gt != ignore_index

    gt = gt[valid].astype(np.int64)
    pred = pred[valid].astype(np.int64)

    bad = (pred < 0) | (pred >= num_classes)
    if bad.any():
        raise ValueError(
            "Predicted values %s are not class indices in [0, %d): map them to a "
            "class first (an unknown class must still count as a wrong prediction)"
            % (sorted(set(np.unique(pred[bad]).tolist())), num_classes)
        )

    counts = np.bincount(gt * num_classes + pred, minlength=num_classes**2)
    return counts.reshape(num_classes, num_classes)


def iou_per_class(confusion):
    """Per-class IoU ``TP / (GT + Pred - TP)`` from a confusion matrix.

    Args:
        confusion: a ``(K, K)`` array (rows: ground truth, columns: prediction)

    Returns:
        a ``(K,)`` float array; ``nan`` for classes whose union is empty
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(confusion)
    union = confusion.sum(axis=1) + confusion.sum(axis=0) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)


def mean_iou(confusion, num_classes=None):
    """Mean IoU over the classes whose union is not empty.

    Args:
        confusion: a ``(K, K)`` array (rows: ground truth, columns: prediction)
        num_classes (None): average over the first ``num_classes`` classes only
            (the rest, e.g. predicted classes that have no ground truth
            counterpart, still lower the IoU of the ground truth classes they
            cover, through the rows). By default all ``K`` classes are averaged

    Returns:
        a float, or ``nan`` if no class has a non-empty union
    """
    iou = iou_per_class(confusion)
    if num_classes is not None:
        iou = iou[:num_classes]

    iou = iou[~np.isnan(iou)]
    if iou.size == 0:
        return float("nan")

    return float(iou.mean())


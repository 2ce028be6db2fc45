"""Results of an FA-Seg evaluation: FiftyOne's segmentation results plus IoU, and what the
FA-Seg panel reads (:attr:`FASegResults.summary`)."""

import numpy as np

import fiftyone.utils.eval.segmentation as fous

import fiftyone_faseg.metrics as fm


def miou_metric(value):
    """The mIoU as FiftyOne stores a custom metric (the Model Evaluation panel shows it)."""
    return {"key": "miou", "value": float(value), "label": "mIoU", "lower_is_better": False}


class FASegResults(fous.SegmentationResults):
    """Results of :func:`fiftyone_faseg.evaluation.evaluate_faseg`: FiftyOne's
    segmentation results (its ``report()``, ``print_report()``,
    ``plot_confusion_matrix()`` and the App's panel work as usual) plus IoU.

    The classes in the mean are the first ``num_gt_classes`` of :attr:`classes` (the
    ground truth classes); predicted classes without a ground truth counterpart come
    after them.

    :attr:`summary` holds what the FA-Seg panel shows besides the matrix: the sample
    counts (``evaluated``, ``no_prediction``, ``no_ground_truth``), the
    ``candidate_recall`` per ground truth class and, when the prediction has stored
    scores, the ``threshold_curve``.
    """

    def __init__(
        self,
        samples,
        config,
        eval_key,
        pixel_confusion_matrix,
        classes,
        matches=None,
        missing=None,
        custom_metrics=None,
        summary=None,
        backend=None,
    ):
        super().__init__(
            samples,
            config,
            eval_key,
            pixel_confusion_matrix,
            classes,
            matches=matches,
            missing=missing,
            custom_metrics=custom_metrics,
            backend=backend,
        )
        self.summary = summary or {}

    @classmethod
    def _from_dict(cls, d, samples, config, eval_key, **kwargs):
        matches = None
        if d.get("ytrue_ids") is not None:
            matches = list(zip(d["ytrue"], d["ypred"], d["weights"], d["ytrue_ids"], d["ypred_ids"]))
        return cls(
            samples,
            config,
            eval_key,
            d["pixel_confusion_matrix"],
            d["classes"],
            matches=matches,
            missing=d.get("missing", None),
            custom_metrics=d.get("custom_metrics", None),
            summary=d.get("summary", None),
            **kwargs,
        )

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
        return {c: float(v) for c, v in zip(self.classes[:n], self.iou[:n]) if not np.isnan(v)}

    @property
    def miou(self):
        """The dataset mIoU in ``[0, 1]`` (``nan`` if no pixel was counted)."""
        return fm.mean_iou(self.confusion, self.num_gt_classes)

    def top_confusions(self, k=10, include_background=True):
        """The ``k`` off-diagonal (ground truth, prediction) pairs with the most
        pixels, as ``[(gt class, predicted class, pixels)]``."""
        off = np.array(self.confusion, dtype=np.int64)
        np.fill_diagonal(off, 0)
        if not include_background:
            off[0, :] = 0
            off[:, 0] = 0
        rows, cols = np.nonzero(off)
        order = np.argsort(-off[rows, cols], kind="stable")[:k]
        return [(self.classes[i], self.classes[j], int(off[i, j])) for i, j in zip(rows[order], cols[order])]

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
        rows = ["| class | IoU (%) | GT pixels | predicted pixels |", "|---|---:|---:|---:|"]
        fmt = "%%.%df" % digits
        for c, r in self.iou_report().items():
            if r["iou"] is None:
                iou = "–"
            elif r["in_mean"]:
                iou = fmt % (100 * r["iou"])
            else:
                iou = "(%s, not in mean)" % (fmt % (100 * r["iou"]))
            rows.append("| %s | %s | %d | %d |" % (c, iou, r["gt_pixels"], r["pred_pixels"]))

        miou = self.miou
        rows.append("| **mIoU** | **%s** | | |" % ("–" if np.isnan(miou) else fmt % (100 * miou)))
        return "\n".join(rows)

    def print_iou_report(self, digits=1):
        """Prints :meth:`markdown`."""
        print(self.markdown(digits=digits))

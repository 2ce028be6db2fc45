"""Results of an FA-Seg evaluation: FiftyOne's segmentation results plus IoU, per-class
tables, and what the FA-Seg panel reads (:attr:`FASegResults.summary`).

What is stored does not grow with the number of samples: the pixel confusion matrix, the
class names and per-class counters. FiftyOne's per-sample matches (``ytrue``, ``ypred``,
``weights``, ``ytrue_ids``, ``ypred_ids``: what the Model Evaluation panel reads to open
a class's or a confusion cell's samples) are read on first use from the evaluation's
per-sample fields (``<eval_key>_classes`` and ``<eval_key>_confusions``).
"""

import numpy as np

import fiftyone.utils.eval.segmentation as fous

import fiftyone_faseg.metrics as fm

from . import outputs

_MATCH_ATTRIBUTES = ("ytrue", "ypred", "weights", "ytrue_ids", "ypred_ids")


MIOU_LABEL = "mIoU (%)"  # how FA-Seg names the mIoU wherever a person reads it


def as_percent(value):
    """A ratio in ``[0, 1]`` as the percent a person reads (``0.2913`` -> ``29.13``): the
    unit of every mIoU FA-Seg shows or stores for people (the per-sample
    ``<eval_key>_miou`` field, the ``miou`` metric of the Model Evaluation panel, the
    panels' and operators' numbers). ``None`` for None or ``nan``."""
    if value is None or value != value:
        return None
    return 100.0 * float(value)


def miou_metric(value):
    """The mIoU (a ratio) as FiftyOne stores a custom metric, in percent (the Model
    Evaluation panel shows it as stored)."""
    return {"key": "miou", "value": as_percent(value), "label": MIOU_LABEL, "lower_is_better": False}


def miou_of(results):
    """The dataset mIoU of any segmentation results' pixel confusion matrix, the one rule
    of :func:`fiftyone_faseg.metrics.mean_iou`: an FA-Seg evaluation's over its ground
    truth classes (:attr:`FASegResults.num_gt_classes`), FiftyOne's own methods' over
    all their classes; ``nan`` if no pixel was counted."""
    return fm.mean_iou(results.pixel_confusion_matrix, getattr(results, "num_gt_classes", None))


def _match_attribute(name):
    def get(self):
        if not self.__dict__["_faseg_matches_loaded"]:
            self._load_matches()
        return self.__dict__["_faseg_" + name]

    def set(self, value):
        self.__dict__["_faseg_" + name] = value

    return property(get, set, doc="FiftyOne's ``%s``, per sample when the evaluation wrote "
                                  "per-class fields (read on first use)" % name)


class FASegResults(fous.SegmentationResults):
    """Results of :func:`fiftyone_faseg.evaluation.evaluate_faseg`: FiftyOne's
    segmentation results (its ``report()``, ``print_report()``,
    ``plot_confusion_matrix()`` and the App's Model Evaluation panel work as usual, its
    class and confusion-cell clicks included) plus IoU and :meth:`class_table`.

    The classes in the mean are the first :attr:`num_gt_classes` of :attr:`classes` (the
    ground truth classes); predicted classes without a ground truth counterpart come
    after them.

    :attr:`summary` holds what the FA-Seg panel shows besides the matrix: the sample
    counts (``evaluated``, ``no_prediction``, ``no_ground_truth``, ``unreadable``), the
    per-class sample counts (``class_samples``), the ``candidate_recall`` per ground
    truth class and, when the prediction has stored scores, the ``threshold_curve``.
    """

    ytrue = _match_attribute("ytrue")
    ypred = _match_attribute("ypred")
    weights = _match_attribute("weights")
    ytrue_ids = _match_attribute("ytrue_ids")
    ypred_ids = _match_attribute("ypred_ids")

    def __init__(
        self,
        samples,
        config,
        eval_key,
        pixel_confusion_matrix,
        classes,
        missing=None,
        custom_metrics=None,
        summary=None,
        num_gt_classes=None,
        backend=None,
    ):
        self.__dict__["_faseg_matches_loaded"] = True  # nothing to read while building
        super().__init__(
            samples,
            config,
            eval_key,
            pixel_confusion_matrix,
            classes,
            matches=None,
            missing=missing,
            custom_metrics=custom_metrics,
            backend=backend,
        )
        self.summary = summary or {}
        self.num_gt_classes = len(self.classes) if num_gt_classes is None else min(int(num_gt_classes), len(self.classes))
        self.__dict__["_faseg_matches_loaded"] = False

    @classmethod
    def _from_dict(cls, d, samples, config, eval_key, **kwargs):
        num_gt_classes = d.get("num_gt_classes", getattr(config, "num_gt_classes", None))  # older: in the config
        return cls(
            samples,
            config,
            eval_key,
            d["pixel_confusion_matrix"],
            d["classes"],
            missing=d.get("missing", None),
            custom_metrics=d.get("custom_metrics", None),
            summary=d.get("summary", None),
            num_gt_classes=num_gt_classes,
            **kwargs,
        )

    def _load_matches(self):
        """Replaces the matrix-derived ``ytrue``/``ypred``/``weights`` by one entry per
        (sample, ground truth class, predicted class) with the two labels' ids, read from
        the per-sample fields (left as they are when the evaluation has none)."""
        self.__dict__["_faseg_matches_loaded"] = True
        matches = per_sample_matches(self)
        if matches is not None:
            for name, values in zip(_MATCH_ATTRIBUTES, matches):
                setattr(self, name, np.asarray(values))

    @property
    def confusion(self):
        """The pixel confusion matrix (rows: ground truth, columns: prediction)."""
        return self.pixel_confusion_matrix

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
        """The dataset mIoU in ``[0, 1]`` (``nan`` if no pixel was counted), for code; what
        people read is :func:`as_percent` of it (``results.metrics()["miou"]``, the
        per-sample ``<eval_key>_miou`` field and the panels are in percent)."""
        return miou_of(self)

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

    def class_table(self):
        """One row per class, in :attr:`classes` order: its ``class``, ``iou``,
        ``precision`` (TP / predicted pixels), ``recall`` (TP / ground truth pixels),
        ``f1``, ``gt_pixels``, ``pred_pixels``, ``tp_pixels``, ``samples`` (samples where
        it is in the ground truth or the prediction), ``gt_samples``, ``pred_samples``
        and ``in_mean``; ratios are None where undefined, sample counts None for
        evaluations made before they were counted.

        Returns:
            a list of dicts
        """
        conf = np.asarray(self.confusion, dtype=np.int64)
        gt, pred, tp = conf.sum(axis=1), conf.sum(axis=0), np.diag(conf)
        iou = self.iou
        presence = (self.summary or {}).get("class_samples") or {}
        rows = []
        for k, c in enumerate(self.classes):
            c = str(c)
            counts = presence.get(c) or {}
            rows.append({
                "class": c,
                "iou": None if np.isnan(iou[k]) else float(iou[k]),
                "precision": float(tp[k] / pred[k]) if pred[k] else None,
                "recall": float(tp[k] / gt[k]) if gt[k] else None,
                "f1": float(2 * tp[k] / (gt[k] + pred[k])) if gt[k] + pred[k] else None,
                "gt_pixels": int(gt[k]),
                "pred_pixels": int(pred[k]),
                "tp_pixels": int(tp[k]),
                "samples": counts.get("samples"),
                "gt_samples": counts.get("gt_samples"),
                "pred_samples": counts.get("pred_samples"),
                "in_mean": bool(k < self.num_gt_classes and not np.isnan(iou[k])),
            })
        return rows

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


def per_sample_matches(results):
    """FiftyOne's per-sample matches of an FA-Seg evaluation, read from its per-sample
    fields: ``(ytrue, ypred, weights, ytrue_ids, ypred_ids)`` lists with one entry per
    (sample, ground truth class, predicted class) of that sample's confusion matrix
    (pixel count as weight), or None when the evaluation wrote no per-class fields."""
    key, samples = results.key, results.samples
    if key is None or samples is None:
        return None
    dataset = samples._dataset
    config = dataset.get_evaluation_info(key).config if key in dataset.list_evaluations() else results.config
    fields = outputs.owned(key, config)["fields"]
    if "classes" not in fields or not all(dataset.has_field(fields[r]) for r in ("classes", "confusions")):
        return None
    cls, pairs = fields["classes"], fields["confusions"]
    view = samples.exists(cls)
    values = view.values([
        config.gt_field + ".id", config.pred_field + ".id",
        cls + ".classifications.label", cls + ".classifications.tp_pixels",
        pairs + ".gt", pairs + ".pred", pairs + ".pixels",
    ])
    ytrue, ypred, weights, ytrue_ids, ypred_ids = [], [], [], [], []
    for gt_id, pred_id, labels, tps, gts, preds, pixels in zip(*values):
        rows = [(c, c, n) for c, n in zip(labels or [], tps or []) if n]
        rows += list(zip(gts or [], preds or [], pixels or []))
        for t, p, n in rows:
            ytrue.append(t)
            ypred.append(p)
            weights.append(n)
            ytrue_ids.append(gt_id)
            ypred_ids.append(pred_id)
    return ytrue, ypred, weights, ytrue_ids, ypred_ids

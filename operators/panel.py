"""The FA-Seg panel: an evaluation's per-class IoU, confusions, threshold curve and
candidate recall, each a click away from the samples behind it.

Built like FiftyOne's Model Evaluation panel (a Python :class:`fiftyone.operators.Panel`),
thin over :mod:`fiftyone_faseg.evaluation`: every number comes from
:func:`~fiftyone_faseg.evaluation.evaluation_summary`, which reads only what the
evaluation and the run stored, and every click sets a view made by
:func:`~fiftyone_faseg.evaluation.class_view` or
:func:`~fiftyone_faseg.evaluation.confusion_view`.
"""

import fiftyone.operators as foo
import fiftyone.operators.types as types
from fiftyone.operators.categories import Categories

import fiftyone_faseg.evaluation as ffe
from fiftyone_faseg.constants import operator_uri
from fiftyone_faseg.evaluation.per_sample import pair_label

from .forms import percent

PANEL_NAME = "faseg_panel"


class FASegPanel(foo.Panel):
    @property
    def config(self):
        return foo.PanelConfig(
            name=PANEL_NAME,
            label="FA-Seg",
            icon="insights",
            category=Categories.ANALYZE,
            help_markdown="Per-class IoU of an FA-Seg evaluation: click a bar to see the samples "
                          "of that class, worst first",
        )

    # -- events ---------------------------------------------------------------------

    def on_load(self, ctx):
        keys = ffe.list_faseg_evaluations(ctx.dataset)
        key = ctx.panel.get_state("eval_key")
        if key not in keys:
            key = keys[0] if keys else None
        self._show(ctx, key)

    def on_change_dataset(self, ctx):
        self.on_load(ctx)

    def on_change_eval(self, ctx):
        self._show(ctx, ctx.params.get("value"))

    def on_class_click(self, ctx):
        name = ctx.params.get("x")
        key = ctx.panel.get_state("eval_key")
        if name is not None and key:
            ctx.ops.set_view(ffe.class_view(ctx.dataset, key, str(name)))

    def on_pair_click(self, ctx):
        pairs = {pair_label(p["gt"], p["pred"]): p for p in ctx.panel.get_state("pairs") or []}
        pair = pairs.get(ctx.params.get("x"))
        key = ctx.panel.get_state("eval_key")
        if pair and key:
            ctx.ops.set_view(ffe.confusion_view(ctx.dataset, key, pair["gt"], pair["pred"]))

    def on_threshold(self, ctx):
        curve = ctx.panel.get_state("curve")
        used, miou = ffe.preview_miou(curve, ctx.params.get("value"))
        ctx.panel.set_state("threshold", used)
        ctx.panel.set_state("preview", _preview_text(used, miou, curve))

    def apply_threshold(self, ctx):
        curve = ctx.panel.get_state("curve") or {}
        threshold = ctx.panel.get_state("threshold")
        if threshold is None or not curve.get("scores_field"):
            return
        # the re-threshold form opens prefilled: the user picks the field to write and confirms
        ctx.prompt(operator_uri("rethreshold_faseg"),
                   params={"label_field": curve["scores_field"], "threshold": threshold})

    def reevaluate(self, ctx):
        key = ctx.panel.get_state("eval_key")
        if key:
            ffe.reevaluate_faseg(ctx.dataset, key)
            ctx.trigger("reload_dataset")
            self._show(ctx, key)

    def show_worst(self, ctx):
        key = ctx.panel.get_state("eval_key")
        if key and ctx.dataset.has_saved_view("%s_worst" % key):
            ctx.ops.set_view(name="%s_worst" % key)

    # -- state ----------------------------------------------------------------------

    def _show(self, ctx, key):
        ctx.panel.set_state("eval_keys", ffe.list_faseg_evaluations(ctx.dataset))
        ctx.panel.set_state("eval_key", key)
        if key is None:
            return
        s = ffe.evaluation_summary(ctx.dataset, key)
        curve = s["threshold_curve"]
        ctx.panel.set_state({
            "header": _header(s),
            "stale": s["stale"],
            "per_class": s["per_class"],
            "pairs": [p for p in s["confusions"]],
            "curve": curve,
            "curve_note": s["curve_note"] or "",
            "threshold": curve["threshold"] if curve else None,
            "preview": _preview_text(*ffe.preview_miou(curve, curve["threshold"] or 0.5), curve) if curve else "",
            "recall_table": [
                {"class": r["class"], "samples": r["samples"], "proposed": r["proposed"],
                 "recall": percent(r["recall"])}
                for r in s["candidate_recall"] or []
            ],
        })
        classes = s["classes"]
        ctx.panel.set_data("class_iou", [{
            "type": "bar",
            "x": [r["class"] for r in classes],
            "y": [round(100 * r["iou"], 1) for r in classes],
            "text": [percent(r["iou"]) for r in classes],
            "hovertemplate": "%{x}: %{text}<extra></extra>",
            "name": "IoU",
        }])
        ctx.panel.set_data("confusions", [{
            "type": "bar",
            "x": [pair_label(p["gt"], p["pred"]) for p in s["confusions"]],
            "y": [p["pixels"] for p in s["confusions"]],
            "name": "pixels",
        }])
        if curve:
            ctx.panel.set_data("curve_plot", [{
                "type": "scatter",
                "mode": "lines+markers",
                "x": curve["thresholds"],
                "y": [None if v is None else round(100 * v, 2) for v in curve["miou"]],
                "name": "mIoU",
            }])

    # -- layout ---------------------------------------------------------------------

    def render(self, ctx):
        panel = types.Object()
        keys = ctx.panel.get_state("eval_keys") or []
        key = ctx.panel.get_state("eval_key")
        if not key:
            panel.md("No FA-Seg evaluation on this dataset yet: run **FA-Seg: evaluate "
                     "segmentations (mIoU)** from the operator browser.", name="empty")
            return types.Property(panel, view=types.GridView(orientation="vertical"))

        choice = types.DropdownView()
        for k in keys:
            choice.add_choice(k, label=k)
        panel.enum("eval_key", keys, default=key, label="Evaluation", view=choice, on_change=self.on_change_eval)
        if ctx.panel.get_state("stale"):
            panel.view("stale", types.Warning(label="Stale: the prediction changed after this evaluation"))
            panel.btn("reevaluate", label="Re-evaluate", icon="refresh", variant="contained",
                      on_click=self.reevaluate)
        panel.md(ctx.panel.get_state("header") or "", name="header")
        panel.btn("worst", label="Worst samples", icon="sort", on_click=self.show_worst)

        panel.plot("class_iou", label="IoU per class (%): click a bar for its samples, worst first",
                   on_click=self.on_class_click,
                   layout=_layout("class", "IoU (%)", yrange=[0, 100]))
        if ctx.panel.get_state("per_class") and ctx.panel.get_state("pairs"):
            panel.plot("confusions", label="Top confusions (GT → predicted): click a bar for its samples",
                       on_click=self.on_pair_click, layout=_layout("ground truth → prediction", "pixels"))

        curve = ctx.panel.get_state("curve")
        if curve:
            panel.plot("curve_plot", label="mIoU per background threshold (stored scores)",
                       layout=_layout("threshold", "mIoU (%)"))
            values = curve["thresholds"]
            panel.float("threshold", label="Threshold", default=ctx.panel.get_state("threshold"),
                        min=min(values), max=max(values), multipleOf=0.05,
                        view=types.SliderView(label="Threshold"), on_change=self.on_threshold)
            panel.md(ctx.panel.get_state("preview") or "", name="preview")
            panel.btn("apply", label="Apply this threshold…", icon="tune", on_click=self.apply_threshold)
        elif ctx.panel.get_state("curve_note"):
            panel.md("*Threshold curve: %s*" % ctx.panel.get_state("curve_note"), name="curve_note")

        recall = ctx.panel.get_state("recall_table")
        if recall:
            table = types.TableView()
            table.add_column("class", label="GT class")
            table.add_column("samples", label="Samples with it")
            table.add_column("proposed", label="In the candidates")
            table.add_column("recall", label="Candidate recall")
            panel.list("recall_table", types.Object(), view=table,
                       label="Candidate recall: how often a ground truth class was proposed")
        return types.Property(panel, view=types.GridView(orientation="vertical", gap=2, padding=2))


def _layout(xtitle, ytitle, yrange=None, height=300):
    """A readable chart: a fixed height in pixels, titled axes, labels that fit."""
    yaxis = {"title": {"text": ytitle}, "automargin": True}
    if yrange:
        yaxis["range"] = yrange
    return {"height": height, "margin": {"t": 10, "b": 10, "l": 10, "r": 10},
            "xaxis": {"title": {"text": xtitle}, "automargin": True}, "yaxis": yaxis}


def _header(s):
    counts = s["counts"]
    text = "**mIoU %s** on %s samples (`%s` vs `%s`)" % (
        percent(s["miou"]), counts.get("evaluated"), s["pred_field"], s["gt_field"])
    left = [(counts.get("no_prediction"), "without a prediction"), (counts.get("no_ground_truth"), "without ground truth")]
    left = ["%d %s" % (n, what) for n, what in left if n]
    if left:
        text += " — left out: %s" % ", ".join(left)
    return text


def _preview_text(threshold, miou, curve):
    if threshold is None:
        return ""
    run = curve.get("threshold") if curve else None
    return "At threshold **%.2f**: mIoU **%s**%s" % (
        threshold, percent(miou), " (the run's threshold)" if run is not None and abs(run - threshold) < 1e-9 else "")


def register(p):
    p.register(FASegPanel)

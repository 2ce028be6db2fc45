"""The FA-Seg panel: an evaluation's per-class IoU, precision, recall and F1, its confusions,
threshold curve and candidate recall, each a click away from the samples behind it, and the
dataset's FA-Seg runs.

Built like FiftyOne's Model Evaluation panel (a Python :class:`fiftyone.operators.Panel`),
thin over :mod:`fiftyone_faseg.evaluation`. The panel's state is **derived, never
patched**: every load, evaluation choice, sort and Re-evaluate rebuilds the whole state and
data (:func:`panel_model`) from what the evaluation stored, and replaces them in the App at
once (``set_panel_state`` / ``set_panel_data``). The App draws
``merge(state, data)`` (lodash: arrays merged by index) and its forms copy what they show
back into the state, so patching left copies of old arrays to merge with new ones; the
plots are also keyed by the evaluation they show, so a new evaluation draws a new chart.
Staleness is the prediction field's run-record revision against the one the evaluation
stored, read on every load and view change (a view change also refreshes the runs list,
and rebuilds everything when the evaluation itself changed).
"""

import hashlib

import numpy as np

import fiftyone.operators as foo
import fiftyone.operators.types as types
from fiftyone.operators.categories import Categories

import fiftyone_faseg.evaluation as ffe
from fiftyone_faseg.constants import PLUGIN_NAME, operator_uri
from fiftyone_faseg.evaluation.colors import legend_markdown
from fiftyone_faseg.evaluation.outputs import field_names
from fiftyone_faseg.run.settings import RunRecord

from .forms import percent

PANEL_NAME = "faseg_panel"

# how the per-class table can be sorted: key -> (label, row key, largest first)
SORTS = {
    "iou": ("IoU, worst first", "iou", False),
    "f1": ("F1, worst first", "f1", False),
    "recall": ("Recall, worst first", "recall", False),
    "precision": ("Precision, worst first", "precision", False),
    "gt_pixels": ("GT pixels, most first", "gt_pixels", True),
    "samples": ("Samples, most first", "samples", True),
    "class": ("Class name", "class", False),
}
RUN_STATES = {"queued": "queued", "scheduled": "queued", "running": "running", "completed": "done",
              "failed": "failed"}
MAX_RUNS = 10
NO_COMPARISON = "none"


# ---------------------------------------------------------------------- what the panel shows


def class_table(results):
    """The evaluation's per-class rows (:meth:`FASegResults.class_table`) of the classes
    with any pixel in the ground truth or the prediction, in the results' order."""
    return [r for r in results.class_table() if r["gt_pixels"] or r["pred_pixels"]]


def sort_rows(rows, sort):
    """``rows`` sorted as :data:`SORTS` says (undefined values last); a new list."""
    _, key, largest = SORTS.get(sort, SORTS["iou"])
    known = [r for r in rows if r[key] is not None]
    return sorted(known, key=lambda r: r[key], reverse=largest) + [r for r in rows if r[key] is None]


def heatmap(results):
    """The confusion heatmap of the classes with any pixel: ``(classes, z)`` with ``z`` the
    share (%) of each ground truth class's pixels predicted as each class, and the pixels."""
    conf = np.asarray(results.confusion, dtype=np.int64)
    keep = np.flatnonzero(conf.sum(axis=0) + conf.sum(axis=1))
    conf = conf[np.ix_(keep, keep)]
    rows = conf.sum(axis=1, keepdims=True)
    share = np.where(rows > 0, 100.0 * conf / np.maximum(rows, 1), 0.0)
    return [results.classes[k] for k in keep], share, conf


def faseg_runs(dataset, limit=MAX_RUNS):
    """This dataset's FA-Seg runs, newest first: queued, running, failed (with the reason)
    and done runs of FiftyOne's delegated operations service, then the fields FA-Seg runs
    wrote (their run records). Rows: ``run``, ``state``, ``when``, ``detail``."""
    from fiftyone.operators.delegated import DelegatedOperationService

    rows = []
    try:
        ops = DelegatedOperationService().list_operations(dataset_name=dataset.name)
    except Exception as e:  # the service is unavailable: say so, keep the panel working
        ops = []
        rows.append({"run": "scheduled runs", "state": "unknown", "when": "", "detail": str(e)})
    ops = [o for o in ops if str(o.operator or "").startswith(PLUGIN_NAME + "/")]
    ops.sort(key=lambda o: o.queued_at or o.scheduled_at or o.updated_at, reverse=True)
    for op in ops[:limit]:
        state = RUN_STATES.get(str(op.run_state).lower(), str(op.run_state))
        detail = ""
        if state == "failed" and op.result is not None and op.result.error:
            detail = str(op.result.error).strip().splitlines()[-1][:300]
        elif op.status is not None and op.status.label:
            detail = str(op.status.label)
        when = op.completed_at or op.failed_at or op.started_at or op.queued_at or op.scheduled_at
        rows.append({"run": op.operator.split("/")[-1], "state": state,
                     "when": when.strftime("%Y-%m-%d %H:%M") if when else "", "detail": detail})
    for name in sorted(dataset.get_field_schema()):
        record = RunRecord.read(dataset, name)
        if record is not None:
            rows.append({"run": "field '%s'" % name, "state": "done", "when": "",
                         "detail": "threshold %s, model %s" % (record.threshold, record.model_path)})
    return rows


def evaluation_keys(dataset):
    """The FA-Seg evaluations the panel offers, newest first: finished ones, and those
    registered without results (shown with what to do about them)."""
    return ffe.all_faseg_evaluations(dataset)


def panel_model(samples, eval_key, sort="iou", compare=None):
    """Everything the panel shows about evaluation ``eval_key`` (side by side with
    evaluation ``compare``, if given), as ``(state, data)``, each whole: the App replaces
    both at once. A failed or half-registered evaluation gives ``state["message"]``
    instead of numbers."""
    dataset = samples._dataset
    keys = evaluation_keys(dataset)
    finished = [k for k in keys if ffe.has_results(dataset, k)]
    state = {"eval_keys": keys, "eval_key": eval_key, "sort": sort if sort in SORTS else "iou",
             "compare_keys": [NO_COMPARISON] + [k for k in finished if k != eval_key], "compare": NO_COMPARISON}
    data = {}
    if eval_key is None:
        return state, data
    try:
        results = dataset.load_evaluation_results(eval_key) if eval_key in dataset.list_evaluations() else None
    except Exception as e:
        results, problem = None, "its results could not be read (%s)" % e
    else:
        problem = "it has no stored results: it failed, or is still running"
    if results is None:
        state["message"] = ("Evaluation '%s' cannot be shown: %s. Run 'FA-Seg: evaluate segmentations' "
                            "again with this key, or delete it (dataset.delete_evaluation('%s'))."
                            % (eval_key, problem, eval_key))
        return state, data

    try:
        s = ffe.evaluation_summary(dataset, eval_key)
        rows = class_table(results)
        config = dataset.get_evaluation_info(eval_key).config
    except Exception as e:  # e.g. fields deleted by hand: say so, keep the panel working
        state["message"] = "Evaluation '%s' cannot be shown: %s. Run it again, or delete it." % (eval_key, e)
        return state, data
    other = _comparable(dataset, compare, eval_key)
    if other is not None:
        state["compare"] = compare
        other_iou = {r["class"]: r["iou"] for r in class_table(other)}
        for r in rows:
            r["compare"] = other_iou.get(r["class"])
    gen = _generation(dataset, eval_key, state["compare"])
    rows = sort_rows(rows, state["sort"])
    curve = s["threshold_curve"]
    state.update({
        "gen": gen,
        "header": _header(s),
        "stale": s["stale"],
        "per_class": s["per_class"],
        "table_classes": [r["class"] for r in rows],  # what a row's index means in row events
        "curve": curve,
        "curve_note": s["curve_note"] or "",
        "threshold": curve["threshold"] if curve else None,
        "preview": _preview_text(*ffe.preview_miou(curve, curve["threshold"] or 0.5), curve) if curve else "",
        "has_errors": "errors" in field_names(eval_key, config),
    })

    class_iou = results.class_iou  # the classes of the mean, the chart's bars
    names = sorted(class_iou, key=lambda c: (class_iou[c], c))
    data["iou_" + gen] = [
        {"type": "bar", "x": names, "y": [100.0] * len(names), "name": "click",
         "marker": {"color": "rgba(128,128,128,0.08)"}, "hoverinfo": "skip"},
        {"type": "bar", "x": names, "y": [100.0 * class_iou[c] for c in names], "name": "IoU",
         "text": [percent(class_iou[c]) for c in names], "textposition": "outside",
         "hovertemplate": "%{x}: %{text}<extra></extra>"},
    ]
    if other is not None:  # side by side: no click background, the table opens every class
        other_iou = other.class_iou
        data["iou_" + gen][0] = {
            "type": "bar", "x": names, "y": [100.0 * other_iou[c] if c in other_iou else None for c in names],
            "name": "IoU: %s" % compare, "text": [percent(other_iou.get(c)) for c in names],
            "textposition": "outside", "hovertemplate": "%{x}: %{text} (" + compare + ")<extra></extra>"}
        data["iou_" + gen].reverse()  # this evaluation's bars first
    data["table"] = [_table_row(r) for r in rows]
    heat_classes, share, pixels = heatmap(results)
    data["heat_" + gen] = [{
        "type": "heatmap", "x": heat_classes, "y": heat_classes, "z": share.round(2).tolist(),
        "customdata": pixels.tolist(), "colorscale": "Blues",
        "hovertemplate": "GT %{y} → predicted %{x}: %{z:.1f} % (%{customdata} px)<extra></extra>",
    }]
    if curve:
        data["curve_" + gen] = [{
            "type": "scatter", "mode": "lines+markers", "x": curve["thresholds"],
            "y": [None if v is None else 100.0 * v for v in curve["miou"]], "name": "mIoU",
            "hovertemplate": "%{x:.2f}: %{y:.1f} %<extra></extra>",
        }]
    data["recall_table"] = [
        {"class": r["class"], "samples": r["samples"], "proposed": r["proposed"], "recall": percent(r["recall"])}
        for r in s["candidate_recall"] or []
    ]
    return state, data


def _generation(dataset, eval_key, compare=NO_COMPARISON):
    """Names what the plots show (the evaluations' keys and timestamps): they are keyed by it."""
    stamps = [(k, dataset.get_evaluation_info(k).timestamp) for k in (eval_key, compare) if k != NO_COMPARISON]
    return hashlib.md5(repr(stamps).encode()).hexdigest()[:8]


def _comparable(dataset, compare, eval_key):
    """The results of evaluation ``compare`` when it can be shown beside ``eval_key``."""
    if compare in (None, NO_COMPARISON, eval_key) or compare not in dataset.list_evaluations():
        return None
    try:
        return dataset.load_evaluation_results(compare)
    except Exception:
        return None


def _table_row(r):
    return {
        "class": r["class"] + ("" if r["in_mean"] else " (not in mean)"),
        "iou": percent(r["iou"]),
        "precision": percent(r["precision"]),
        "recall": percent(r["recall"]),
        "f1": percent(r["f1"]),
        "gt_pixels": r["gt_pixels"],
        "pred_pixels": r["pred_pixels"],
        "samples": r["samples"],
        "compare": percent(r.get("compare")),
        "delta": "–" if r.get("compare") is None else "%+.1f" % (100 * (r["iou"] - r["compare"])),
    }


# ---------------------------------------------------------------------- the panel


class FASegPanel(foo.Panel):
    @property
    def config(self):
        return foo.PanelConfig(
            name=PANEL_NAME,
            label="FA-Seg",
            icon="insights",
            category=Categories.ANALYZE,
            help_markdown="Per-class IoU, precision, recall and F1 of an FA-Seg evaluation: click a "
                          "class or a confusion cell to see its samples",
        )

    # -- events ---------------------------------------------------------------------

    def on_load(self, ctx):
        self._show(ctx, ctx.panel.get_state("eval_key"))

    def on_change_dataset(self, ctx):
        self._show(ctx, None)

    def on_change_view(self, ctx):
        # a run, rerun or re-threshold may have written the field: read its revision again.
        # Only the flag changes unless the evaluation itself did (a view change never picks
        # the evaluation shown: events run concurrently, each with the state it was sent)
        key, gen = ctx.panel.get_state("eval_key"), ctx.panel.get_state("gen")
        if not key or not gen:
            return
        dataset = ctx.dataset
        dataset.reload()
        if key not in dataset.list_evaluations() or _generation(dataset, key) != gen:
            self._show(ctx, key)
            return
        ctx.panel.set_state("stale", ffe.is_stale(dataset, key))
        # the runs list, replaced whole: the App may hold a copy of the old list in the state
        ctx.panel.set_state("runs", None)
        ctx.panel.set_data("runs", faseg_runs(dataset))

    def on_change_eval(self, ctx):
        self._show(ctx, ctx.params.get("value"))

    def on_change_sort(self, ctx):
        self._show(ctx, ctx.panel.get_state("eval_key"), sort=ctx.params.get("value"))

    def on_change_compare(self, ctx):
        self._show(ctx, ctx.panel.get_state("eval_key"), compare=ctx.params.get("value"))

    def on_class_click(self, ctx):
        self._open(ctx, ffe.class_view, ctx.params.get("x"))

    def on_row_samples(self, ctx):
        self._open(ctx, ffe.class_view, self._row_class(ctx))

    def on_row_missed(self, ctx):
        self._open(ctx, ffe.missed_view, self._row_class(ctx))

    def on_row_false_alarm(self, ctx):
        self._open(ctx, ffe.false_alarm_view, self._row_class(ctx))

    def on_cell_click(self, ctx):
        gt, pred = ctx.params.get("y"), ctx.params.get("x")
        if gt is None or pred is None:
            return
        if gt == pred:
            self._open(ctx, ffe.class_view, gt)
        else:
            self._open(ctx, lambda s, k, c: ffe.confusion_view(s, k, gt, pred), gt)

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
        # the threshold the preview shows (the curve's nearest): the slider writes its raw
        # position into the same state (0.797 where the preview said 0.80)
        threshold, _ = ffe.preview_miou(curve, threshold)
        # the whole field: a field's masks all come from one threshold; once it is written,
        # the panel reads the evaluation again (stale at once, without a reload)
        ctx.prompt(operator_uri("rethreshold_faseg"),
                   params={"label_field": curve["scores_field"], "threshold": threshold, "view_target": "DATASET"},
                   on_success=self.refresh)

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

    def refresh(self, ctx):
        self._show(ctx, ctx.panel.get_state("eval_key"))

    # -- state ----------------------------------------------------------------------

    def _row_class(self, ctx):
        classes = ctx.panel.get_state("table_classes") or []
        row = ctx.params.get("row")
        return classes[row] if isinstance(row, int) and 0 <= row < len(classes) else None

    def _open(self, ctx, make_view, name):
        key = ctx.panel.get_state("eval_key")
        if name is None or not key:
            return
        try:
            view = make_view(ctx.dataset, key, str(name))
        except ValueError as e:
            ctx.ops.notify(str(e), variant="error")
            return
        ctx.ops.set_view(view)

    def _show(self, ctx, key, sort=None, compare=None):
        # another process (a worker, the SDK) may have written the field or the evaluation
        dataset = ctx.dataset
        dataset.reload()
        dataset.clear_cache()
        keys = evaluation_keys(dataset)
        if key not in keys:
            key = keys[0] if keys else None
        state, data = panel_model(dataset, key, sort=sort or ctx.panel.get_state("sort") or "iou",
                                  compare=compare or ctx.panel.get_state("compare"))
        data["runs"] = faseg_runs(dataset)
        ctx.ops.set_panel_state(state)
        ctx.ops.set_panel_data(data)
        # what render() reads in this same call
        current = ctx.panel_state
        if isinstance(current, dict):
            current.clear()
            current.update(state)

    # -- layout ---------------------------------------------------------------------

    def render(self, ctx):
        panel = types.Object()
        keys = ctx.panel.get_state("eval_keys") or []
        key = ctx.panel.get_state("eval_key")
        gen = ctx.panel.get_state("gen")
        if not key:
            panel.md("No FA-Seg evaluation on this dataset yet: run **FA-Seg: evaluate "
                     "segmentations (mIoU)** from the operator browser.", name="empty")
            self._runs(panel)
            return types.Property(panel, view=types.GridView(orientation="vertical"))

        panel.enum("eval_key", keys, default=key, label="Evaluation", view=_dropdown(keys, lambda k: k),
                   on_change=self.on_change_eval)
        message = ctx.panel.get_state("message")
        if message:
            panel.view("message", types.Error(label="This evaluation cannot be shown", description=message))
            self._runs(panel)
            return types.Property(panel, view=types.GridView(orientation="vertical", gap=2, padding=2))

        if not gen:  # the state is being (re)built
            panel.md("*Loading evaluation '%s'…*" % key, name="loading")
            self._runs(panel)
            return types.Property(panel, view=types.GridView(orientation="vertical", gap=2, padding=2))

        if ctx.panel.get_state("stale"):
            panel.view("stale", types.Warning(label="Stale: the prediction changed after this evaluation"))
            panel.btn("reevaluate", label="Re-evaluate", icon="refresh", variant="contained",
                      on_click=self.reevaluate)
        panel.md(ctx.panel.get_state("header") or "", name="header")
        panel.btn("worst", label="Worst samples", icon="sort", on_click=self.show_worst)

        compare = ctx.panel.get_state("compare") or NO_COMPARISON
        choices = ctx.panel.get_state("compare_keys") or [NO_COMPARISON]
        if len(choices) > 1:
            panel.enum("compare", choices, default=compare, label="Compare with", on_change=self.on_change_compare,
                       view=_dropdown(choices, lambda k: "(no comparison)" if k == NO_COMPARISON else k))
        comparing = compare != NO_COMPARISON
        panel.plot("iou_" + gen, label="IoU per class (%): click a column for its samples, worst first",
                   on_click=self.on_class_click,
                   layout=dict(_layout("class", "IoU (%)", yrange=[0, 105]), barmode="group" if comparing else "overlay",
                               showlegend=comparing))

        sort = ctx.panel.get_state("sort") or "iou"
        panel.enum("sort", list(SORTS), default=sort, label="Sort classes by",
                   view=_dropdown(list(SORTS), lambda k: SORTS[k][0]), on_change=self.on_change_sort)
        table = types.TableView(max_inline_actions=3)
        for column, label in (("class", "Class"), ("iou", "IoU"), ("precision", "Precision"),
                              ("recall", "Recall"), ("f1", "F1"), ("gt_pixels", "GT pixels"),
                              ("pred_pixels", "Predicted pixels"), ("samples", "Samples")):
            table.add_column(column, label=label)
        if comparing:
            table.add_column("compare", label="IoU in %s" % compare)
            table.add_column("delta", label="Δ IoU (points)")
        table.add_row_action("samples", self.on_row_samples, label="Samples", icon="photo_library",
                             tooltip="Samples with this class, worst IoU first")
        if ctx.panel.get_state("per_class"):
            table.add_row_action("missed", self.on_row_missed, label="Missed", icon="visibility_off",
                                 tooltip="Samples where its pixels were predicted as something else")
            table.add_row_action("false_alarm", self.on_row_false_alarm, label="False alarm", icon="report",
                                 tooltip="Samples where it was predicted on other pixels")
        panel.list("table", types.Object(), view=table, label="Per-class metrics: each row opens its samples")

        if ctx.panel.get_state("per_class"):
            panel.plot("heat_" + gen, label="Confusions (% of each GT class's pixels): click a cell for its samples",
                       on_click=self.on_cell_click,
                       layout=dict(_layout("prediction", "ground truth", height=420),
                                   yaxis={"autorange": "reversed", "title": {"text": "ground truth"},
                                          "automargin": True}))
        if ctx.panel.get_state("has_errors"):
            panel.md(legend_markdown(key), name="legend")

        curve = ctx.panel.get_state("curve")
        if curve:
            panel.plot("curve_" + gen, label="mIoU (%) per background threshold (stored scores)",
                       layout=_layout("threshold", "mIoU (%)"))
            values = curve["thresholds"]
            panel.float("threshold", label="Threshold", default=ctx.panel.get_state("threshold"),
                        min=min(values), max=max(values), multipleOf=0.05,
                        view=types.SliderView(label="Threshold"), on_change=self.on_threshold)
            panel.md(ctx.panel.get_state("preview") or "", name="preview")
            panel.btn("apply", label="Apply this threshold to the whole field…", icon="tune",
                      on_click=self.apply_threshold)
        elif ctx.panel.get_state("curve_note"):
            panel.md("*Threshold curve: %s*" % ctx.panel.get_state("curve_note"), name="curve_note")

        recall = types.TableView()
        recall.add_column("class", label="GT class")
        recall.add_column("samples", label="Samples with it")
        recall.add_column("proposed", label="In the candidates")
        recall.add_column("recall", label="Candidate recall")
        panel.list("recall_table", types.Object(), view=recall,
                   label="Candidate recall: how often a ground truth class was proposed")
        self._runs(panel)
        return types.Property(panel, view=types.GridView(orientation="vertical", gap=2, padding=2))

    def _runs(self, panel):
        table = types.TableView()
        for column, label in (("run", "Run"), ("state", "State"), ("when", "When"), ("detail", "Detail")):
            table.add_column(column, label=label)
        panel.list("runs", types.Object(), view=table, label="FA-Seg runs on this dataset")
        panel.btn("refresh", label="Refresh", icon="refresh", on_click=self.refresh)


def _dropdown(values, label):
    view = types.DropdownView()
    for v in values:
        view.add_choice(v, label=label(v))
    return view


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

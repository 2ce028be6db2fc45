"""Iterating inside the App: ``rethreshold_faseg``, ``sweep_faseg_threshold``,
``edit_candidates`` and ``rerun_faseg``.

Thin over :mod:`fiftyone_faseg.analysis.iterate` and :mod:`fiftyone_faseg.run.rerun`; torch and the
model load only when an operator executes.
"""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from fiftyone_faseg.constants import DEFAULT_THRESHOLD
from fiftyone_faseg.fields import candidates_field, scores_field
from fiftyone_faseg.run.settings import RunRecord

from fiftyone_faseg import limits

from . import forms

NO_SCORES = "No FA-Seg field with stored scores: run run_faseg with 'Store score maps' on"
NO_CANDIDATES = "No FA-Seg run with candidates in this dataset"


class RethresholdFASeg(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="rethreshold_faseg",
            label="FA-Seg: re-threshold from stored scores",
            description="New background threshold (or class subset) without re-running the model",
            dynamic=True,
            execute_as_generator=True,  # the App shows "Re-thresholded 120 / 400 samples" as it runs
            allow_immediate_execution=True,
            allow_delegated_execution=True,
            default_choice_to_delegated=False,  # fast: no model, a matrix product per sample
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        # the whole field unless the user picks otherwise: a field's masks all come from one threshold
        inputs.view_target(ctx, default_target="DATASET")
        label_field = forms.field_choice(ctx, inputs, forms.faseg_fields(ctx, scores_field), NO_SCORES)
        if label_field:
            record = RunRecord.read(ctx.dataset, label_field)
            default = record.threshold if record and record.threshold is not None else DEFAULT_THRESHOLD
            prop = inputs.float("threshold", default=default, required=True, label="Background threshold",
                                description="0.5-0.6 is best in the paper")
            forms.flag(prop, forms.range_problem(ctx.params.get("threshold"), "The threshold", 0, 1))
            names = [str(n) for v, n in sorted((ctx.dataset.mask_targets.get(label_field) or {}).items()) if int(v)]
            inputs.list("classes", types.String(), required=False, label="Only these classes (optional)",
                        view=forms.choices(names, allow_user_input=False))
            out_field = forms.label_field_input(
                ctx, inputs, name="out_field", default=label_field, label="Write to field",
                description="The same field, or a new one (it gets the same mask_targets)",
            )
            if out_field != label_field and out_field in ctx.dataset.get_field_schema():
                inputs.bool("overwrite", default=False, label="Replace the masks in '%s'" % out_field)
            problem = _partial_field_problem(ctx, out_field, ctx.params.get("threshold", default),
                                             ctx.params.get("classes") or None)
            if problem:
                forms.blocker(inputs, "partial_field", problem,
                              "Choose 'Dataset' as the target, or write to a new field")
        return types.Property(inputs, view=types.View(label="FA-Seg: re-threshold"))

    def execute(self, ctx):
        limits.check(ctx.params, ctx.dataset)  # App input: refused however the operator was called
        # counts while it runs: streamed to the App, a delegated run's heartbeat
        return forms.reporting(ctx, self, lambda report: self._rethreshold(ctx, report),
                               "Re-thresholded %d / %d samples")

    def _rethreshold(self, ctx, progress):
        import time

        from fiftyone_faseg.analysis.iterate import rethreshold

        label_field = ctx.params["label_field"]
        out_field = ctx.params.get("out_field") or label_field
        start = time.perf_counter()
        written = rethreshold(
            ctx.target_view(),
            label_field,
            float(ctx.params.get("threshold")),
            classes=ctx.params.get("classes") or None,
            out_field=out_field,
            overwrite=bool(ctx.params.get("overwrite", False)),
            progress=progress,
        )
        if not ctx.delegated:
            ctx.trigger("reload_dataset")
        return dict(written=len(written), field=out_field, seconds=round(time.perf_counter() - start, 3),
                    stale=forms.stale_message(ctx.dataset, out_field) if written else None)

    def resolve_output(self, ctx):
        if not ctx.results:
            return None  # an App run showed its results as it ended (forms.reporting)
        outputs = types.Object()
        outputs.int("written", label="Masks written")
        outputs.str("field", label="Into field")
        outputs.float("seconds", label="Seconds")
        outputs.str("stale", label="Evaluations")
        return types.Property(outputs, view=types.View(label="Re-threshold complete"))


def _partial_field_problem(ctx, out_field, threshold, classes):
    """Why re-thresholding the target into ``out_field`` would mix thresholds in it (some of
    its samples outside the target were made otherwise), as the SDK would refuse; None if not."""
    record = RunRecord.read(ctx.dataset, out_field)
    if record is None or threshold is None:
        return None
    same = record.threshold is not None and abs(float(threshold) - record.threshold) < 1e-9
    if same and (sorted(classes) if classes else None) == record.classes:
        return None
    try:
        others = ctx.dataset.exists(out_field).count() - ctx.target_view().exists(out_field).count()
    except Exception:
        return None
    if others <= 0:
        return None
    return ("%d other samples of '%s' were made at threshold %s and are not in the target: a field's masks "
            "all come from one threshold" % (others, out_field, record.threshold))


class SweepFASegThreshold(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="sweep_faseg_threshold",
            label="FA-Seg: mIoU per threshold (sweep)",
            description="mIoU at thresholds 0.3-0.8 (extended until the best is inside), from stored scores",
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=False,  # fast, and its plot exists only in the dialog
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        inputs.view_target(ctx)
        label_field = forms.field_choice(ctx, inputs, forms.faseg_fields(ctx, scores_field), NO_SCORES)
        if label_field and forms.ground_truth_input(ctx, inputs, exclude=(label_field,)):
            start = inputs.float("start", default=0.3, label="From")
            stop = inputs.float("stop", default=0.8, label="To")
            step = inputs.float("step", default=0.05, label="Step")
            lo, hi = ctx.params.get("start", 0.3), ctx.params.get("stop", 0.8)
            forms.flag(start, forms.range_problem(lo, "From", 0, 1))
            forms.flag(stop, forms.range_problem(hi, "To", 0, 1) or (
                "To must be above From" if lo is not None and hi is not None and hi < lo else None))
            forms.flag(step, forms.range_problem(ctx.params.get("step"), "Step", 0.005, 1))
        return types.Property(inputs, view=types.View(label="FA-Seg: threshold sweep"))

    def execute(self, ctx):
        limits.check(ctx.params, ctx.dataset)  # App input: refused however the operator was called
        from fiftyone_faseg.analysis.iterate import sweep

        start, stop, step = (float(ctx.params.get(k, d)) for k, d in (("start", 0.3), ("stop", 0.8), ("step", 0.05)))
        count = int(round((stop - start) / step)) + 1
        thresholds = [round(start + i * step, 4) for i in range(count)]
        target, label_field, gt_field = ctx.target_view(), ctx.params["label_field"], ctx.params["gt_field"]
        miou = covering_sweep(lambda ts: sweep(target, label_field, gt_field, ts), thresholds, step)
        return sweep_outputs(miou)

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.float("best_threshold", label="Best threshold")
        outputs.str("best_miou_percent", label="Best mIoU")
        outputs.plot("plot", label="mIoU per threshold", layout=SWEEP_LAYOUT, config=dict(displayModeBar=False))
        table = types.TableView()
        table.add_column("threshold", label="Threshold")
        table.add_column("miou", label="mIoU")
        outputs.list("table", types.Object(), label="mIoU per threshold", view=table)
        return types.Property(outputs, view=types.View(label="Threshold sweep"))


def covering_sweep(measure, thresholds, step, extend=3):
    """``measure(thresholds) -> {threshold: mIoU}`` over ``thresholds``, extended ``extend``
    steps at a time past an end while the best value sits at that end (within [0, 1]), so the
    range covers its best value; returns every threshold measured, in order."""
    miou = dict(measure(thresholds))
    while True:
        known = {t: v for t, v in miou.items() if v is not None}
        if not known:
            break
        best, ts = max(known, key=known.get), sorted(miou)
        if best == ts[0] and ts[0] - step >= -1e-9:
            more = [round(ts[0] - k * step, 4) for k in range(1, extend + 1)]
        elif best == ts[-1] and ts[-1] + step <= 1 + 1e-9:
            more = [round(ts[-1] + k * step, 4) for k in range(1, extend + 1)]
        else:
            break
        more = [t for t in more if -1e-9 <= t <= 1 + 1e-9 and t not in miou]
        if not more:
            break
        miou.update(measure(more))
    return {t: miou[t] for t in sorted(miou)}


# Readable in the operator dialog: a fixed height, room for the axis titles, percent ticks
SWEEP_LAYOUT = dict(
    height=320,
    margin=dict(l=70, r=20, t=20, b=60),
    xaxis=dict(title=dict(text="Background threshold"), tickformat=".2f"),
    yaxis=dict(title=dict(text="mIoU (%)"), ticksuffix=" %", rangemode="tozero"),
    showlegend=False,
)


def sweep_outputs(miou):
    """Operator results of a sweep: a Plotly line and a table in percent, the best threshold
    and its mIoU (``best_miou`` in ``[0, 1]`` for SDK callers, shown as ``best_miou_percent``)."""
    known = {t: v for t, v in miou.items() if v is not None}
    best = max(known, key=known.get) if known else None
    return dict(
        plot=[dict(
            x=list(miou), y=[None if v is None else round(100 * v, 1) for v in miou.values()],
            type="scatter", mode="lines+markers", name="mIoU", hovertemplate="%{x:.2f}: %{y:.1f} %<extra></extra>",
        )],
        table=[dict(threshold=t, miou=forms.percent(v)) for t, v in miou.items()],
        best_threshold=best,
        best_miou=known.get(best),
        best_miou_percent=forms.percent(known.get(best)),
    )


class EditCandidates(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="edit_candidates",
            label="FA-Seg: edit candidate classes",
            description="Fix the classes FA-Seg segments the selected samples into",
            dynamic=True,
        )

    def resolve_input(self, ctx):
        from fiftyone_faseg.run.rerun import get_candidates, vocabulary

        inputs = types.Object()
        inputs.view_target(ctx)
        label_field = forms.field_choice(ctx, inputs, forms.faseg_fields(ctx, candidates_field), NO_CANDIDATES)
        if not label_field:
            return types.Property(inputs)
        target = ctx.target_view()
        current = []
        for names in get_candidates(target, label_field).values():
            current.extend(n for n in names or [] if n not in current)
        modes = types.RadioGroup()
        modes.add_choice("replace", label="Set exactly these classes")
        modes.add_choice("add", label="Add these classes")
        modes.add_choice("remove", label="Remove these classes")
        inputs.enum("mode", modes.values(), default="replace", label="Edit", view=modes)
        prop = inputs.list("classes", types.String(), default=current, label="Candidate classes",
                           description="Current candidates of the %d target samples" % target.count(),
                           view=forms.choices(vocabulary(ctx.dataset, label_field)))
        inputs.str("new_classes", required=False, label="New classes (separated by commas or new lines)",
                   view=types.TextFieldView(multiline=True))
        if not _edited_classes(ctx.params if "classes" in ctx.params else dict(ctx.params, classes=current)):
            forms.flag(prop, "Name at least one class")
        return types.Property(inputs, view=types.View(label="FA-Seg: edit candidates"))

    def execute(self, ctx):
        limits.check(ctx.params, ctx.dataset)  # App input: refused however the operator was called
        from fiftyone_faseg.run.rerun import set_candidates

        classes = _edited_classes(ctx.params)
        mode = ctx.params.get("mode") or "replace"
        edited = set_candidates(ctx.target_view(), ctx.params["label_field"], classes, mode=mode)
        ctx.trigger("reload_samples")
        verb = {"replace": "set to", "add": "added", "remove": "removed"}[mode]
        return dict(
            edited=edited,
            message="Candidates of %d samples: %s %s. Run 'FA-Seg: rerun with edited candidates' on them "
                    "to segment them again" % (edited, verb, ", ".join(classes)),
        )

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.int("edited", label="Samples edited")
        outputs.str("message", label="Done")
        return types.Property(outputs, view=types.View(label="Candidates edited"))


class RerunFASeg(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="rerun_faseg",
            label="FA-Seg: rerun with edited candidates",
            description="Segment only the target samples again, each into its own candidates",
            dynamic=True,
            execute_as_generator=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        inputs.view_target(ctx)
        label_field = forms.field_choice(ctx, inputs, forms.faseg_fields(ctx, candidates_field), NO_CANDIDATES)
        if label_field:
            record = RunRecord.read(ctx.dataset, label_field)
            forms.model_path_input(ctx, inputs, record.model_path if record else None, label="Diffusion model")
            prop = inputs.float("threshold", default=record.threshold if record else None, required=False,
                                label="Background threshold")
            forms.flag(prop, forms.range_problem(ctx.params.get("threshold"), "The threshold", 0, 1))
            stale = forms.stale_message(ctx.dataset, label_field, before=True)
            if stale:
                inputs.view("stale_notice", types.Notice(label=stale))
            forms.delegation_notice(inputs)
        return types.Property(inputs, view=types.View(label="FA-Seg: rerun"))

    @forms.shows_errors
    def execute(self, ctx):
        limits.check(ctx.params, ctx.dataset)  # App input: refused however the operator was called
        from fiftyone_faseg.run.rerun import rerun_settings
        from fiftyone_faseg.run.segment import iter_segment_samples

        label_field = ctx.params["label_field"]
        target = ctx.target_view()
        settings = rerun_settings(target, label_field, model_path=ctx.params.get("model_path") or None,
                                  threshold=ctx.params.get("threshold"))
        summary = yield from forms.progress(ctx, iter_segment_samples(target, settings=settings))
        if not ctx.delegated:
            yield ctx.trigger("reload_dataset")
        forms.raise_if_all_failed(summary, what="rerun")
        results = forms.summary_results(summary, settings, stale=forms.stale_message(ctx.dataset, label_field))
        yield from forms.show_output(ctx, forms.summary_outputs(results, label_field), results,
                                     "FA-Seg rerun complete")


def _edited_classes(params):
    return forms.split_classes(list(params.get("classes") or []) + [params.get("new_classes") or ""])


def register(p):
    p.register(RethresholdFASeg)
    p.register(SweepFASegThreshold)
    p.register(EditCandidates)
    p.register(RerunFASeg)

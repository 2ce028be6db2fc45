"""Iterating inside the App: ``rethreshold_faseg``, ``sweep_faseg_threshold``,
``edit_candidates`` and ``rerun_faseg``.

Thin over :mod:`fiftyone_faseg.iterate` and :mod:`fiftyone_faseg.rerun`; torch and the
model load only when an operator executes.
"""

import fiftyone.core.labels as fol
import fiftyone.operators as foo
import fiftyone.operators.types as types

from fiftyone_faseg.constants import DEFAULT_THRESHOLD

from .run import dropdown, segment_with_progress


class RethresholdFASeg(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="rethreshold_faseg",
            label="FA-Seg: re-threshold from stored scores",
            description="New background threshold (or class subset) without re-running the model",
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
            default_choice_to_delegated=False,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        label_field = _scored_field_input(ctx, inputs)
        if label_field:
            from fiftyone_faseg.iterate import run_settings

            inputs.float("threshold", default=run_settings(ctx.dataset, label_field).get("threshold", DEFAULT_THRESHOLD),
                         required=True, label="Background threshold", description="0.5-0.6 is best in the paper")
            names = [str(n) for v, n in sorted((ctx.dataset.mask_targets.get(label_field) or {}).items()) if int(v)]
            inputs.list("classes", types.String(), required=False, label="Only these classes (optional)",
                        view=_choices(names, allow_user_input=False))
            prop = inputs.str("out_field", default=label_field, required=True, label="Write to field",
                              description="The same field, or a new one (it gets the same mask_targets)")
            out_field = ctx.params.get("out_field") or label_field
            if out_field != label_field and out_field in ctx.dataset.get_field_schema():
                from fiftyone_faseg.iterate import run_settings

                if not run_settings(ctx.dataset, out_field):
                    prop.invalid = True
                    prop.error_message = "'%s' was not made by FA-Seg: choose a new field" % out_field
                else:
                    inputs.bool("overwrite", default=False, label="Replace the masks in '%s'" % out_field)
        return types.Property(inputs, view=types.View(label="FA-Seg: re-threshold"))

    def execute(self, ctx):
        import time

        from fiftyone_faseg.iterate import rethreshold

        label_field = ctx.params["label_field"]
        start = time.perf_counter()
        written = rethreshold(
            ctx.target_view(),
            label_field,
            float(ctx.params.get("threshold")),
            classes=ctx.params.get("classes") or None,
            out_field=ctx.params.get("out_field") or label_field,
            overwrite=bool(ctx.params.get("overwrite", False)),
        )
        if not ctx.delegated:
            ctx.trigger("reload_dataset")
        return dict(written=len(written), seconds=round(time.perf_counter() - start, 3))

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.int("written", label="Masks written")
        outputs.float("seconds", label="Seconds")
        return types.Property(outputs, view=types.View(label="Re-threshold complete"))


class SweepFASegThreshold(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="sweep_faseg_threshold",
            label="FA-Seg: mIoU per threshold (sweep)",
            description="mIoU of the current view at thresholds 0.3-0.8, from stored scores",
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        label_field = _scored_field_input(ctx, inputs)
        if label_field:
            fields = [f for f in _segmentation_fields(ctx) if f != label_field]
            if not fields:
                inputs.view("no_gt", types.Warning(label="No ground truth Segmentation field")).invalid = True
                return types.Property(inputs)
            inputs.enum("gt_field", fields, default="ground_truth" if "ground_truth" in fields else fields[0],
                        required=True, label="Ground truth field", view=dropdown(fields))
            inputs.float("start", default=0.3, label="From")
            inputs.float("stop", default=0.8, label="To")
            inputs.float("step", default=0.05, label="Step")
        return types.Property(inputs, view=types.View(label="FA-Seg: threshold sweep"))

    def execute(self, ctx):
        from fiftyone_faseg.iterate import sweep

        start, stop, step = (float(ctx.params.get(k, d)) for k, d in (("start", 0.3), ("stop", 0.8), ("step", 0.05)))
        count = max(1, int(round((stop - start) / step)) + 1) if step > 0 else 1
        thresholds = [round(start + i * step, 4) for i in range(count)]
        miou = sweep(ctx.target_view(), ctx.params["label_field"], ctx.params["gt_field"], thresholds)
        return sweep_outputs(miou)

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.float("best_threshold", label="Best threshold")
        outputs.float("best_miou", label="Best mIoU")
        outputs.plot("plot", label="mIoU per threshold",
                     layout=dict(xaxis=dict(title="threshold"), yaxis=dict(title="mIoU")))
        table = types.TableView()
        table.add_column("threshold", label="Threshold")
        table.add_column("miou", label="mIoU")
        outputs.list("table", types.Object(), label="mIoU per threshold", view=table)
        return types.Property(outputs, view=types.View(label="Threshold sweep"))


def sweep_outputs(miou):
    """Operator results of a sweep: a Plotly line, a table and the best threshold."""
    known = {t: v for t, v in miou.items() if v is not None}
    best = max(known, key=known.get) if known else None
    return dict(
        plot=[dict(x=list(miou), y=[v for v in miou.values()], type="scatter", mode="lines+markers", name="mIoU")],
        table=[dict(threshold=t, miou=None if v is None else round(v, 4)) for t, v in miou.items()],
        best_threshold=best,
        best_miou=known.get(best),
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
        from fiftyone_faseg.rerun import get_candidates, vocabulary

        inputs = types.Object()
        inputs.view_target(ctx)
        fields = [f for f in _segmentation_fields(ctx) if f + "_candidates" in ctx.dataset.get_field_schema()]
        label_field = _field_choice(ctx, inputs, fields, "No FA-Seg run with candidates in this dataset")
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
        inputs.list("classes", types.String(), default=current, label="Candidate classes",
                    description="Current candidates of the %d target samples" % target.count(),
                    view=_choices(vocabulary(ctx.dataset, label_field)))
        inputs.str("new_classes", required=False, label="New classes (comma-separated)")
        return types.Property(inputs, view=types.View(label="FA-Seg: edit candidates"))

    def execute(self, ctx):
        from fiftyone_faseg.rerun import set_candidates

        classes = list(ctx.params.get("classes") or [])
        classes += [c.strip() for c in (ctx.params.get("new_classes") or "").split(",") if c.strip()]
        edited = set_candidates(ctx.target_view(), ctx.params["label_field"], classes,
                                mode=ctx.params.get("mode") or "replace")
        ctx.trigger("reload_samples")
        return dict(edited=edited)


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
        fields = [f for f in _segmentation_fields(ctx) if f + "_candidates" in ctx.dataset.get_field_schema()]
        label_field = _field_choice(ctx, inputs, fields, "No FA-Seg run with candidates in this dataset")
        if label_field:
            from fiftyone_faseg.iterate import run_settings

            settings = run_settings(ctx.dataset, label_field)
            inputs.str("model_path", default=settings.get("model_path"), required=False, label="Diffusion model")
            inputs.float("threshold", default=settings.get("threshold"), required=False, label="Background threshold")
        return types.Property(inputs, view=types.View(label="FA-Seg: rerun"))

    def execute(self, ctx):
        from fiftyone_faseg.rerun import rerun_settings
        from fiftyone_faseg.run import iter_segment_samples

        target = ctx.target_view()
        settings = rerun_settings(target, ctx.params["label_field"], model_path=ctx.params.get("model_path") or None,
                                  threshold=ctx.params.get("threshold"))
        summary = yield from segment_with_progress(ctx, iter_segment_samples(target, settings=settings))
        yield dict(processed=len(summary.processed) if summary else 0, failed=len(summary.failed) if summary else 0)


def _segmentation_fields(ctx):
    return sorted(ctx.dataset.get_field_schema(embedded_doc_type=fol.Segmentation))


def _choices(names, allow_user_input=True):
    view = types.AutocompleteView(allow_user_input=allow_user_input, allow_duplicates=False)
    for name in names:
        view.add_choice(name, label=name)
    return view


def _field_choice(ctx, inputs, fields, warning):
    if not fields:
        inputs.view("no_field", types.Warning(label=warning)).invalid = True
        return None
    default = "faseg" if "faseg" in fields else fields[0]
    inputs.enum("label_field", fields, default=default, required=True, label="FA-Seg field", view=dropdown(fields))
    return ctx.params.get("label_field") or default


def _scored_field_input(ctx, inputs):
    inputs.view_target(ctx)
    schema = ctx.dataset.get_field_schema()
    fields = [f for f in _segmentation_fields(ctx) if f + "_scores" in schema]
    return _field_choice(ctx, inputs, fields,
                         "No FA-Seg field with stored scores: run run_faseg with 'Store score maps' on")


def register(p):
    p.register(RethresholdFASeg)
    p.register(SweepFASegThreshold)
    p.register(EditCandidates)
    p.register(RerunFASeg)

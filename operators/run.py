"""The ``run_faseg`` operator: FA-Seg over a view, from the App or the SDK.

Thin over :func:`fiftyone_faseg.run.iter_segment_samples`; torch, diffusers and the model
are loaded only when it executes, so the plugin always registers.
"""

import fiftyone as fo
import fiftyone.core.labels as fol
import fiftyone.operators as foo
import fiftyone.operators.types as types

from fiftyone_faseg.constants import DEFAULT_CAPTIONER, DEFAULT_MODEL, DEFAULT_TAGGER, DEFAULT_THRESHOLD

DEFAULT_BATCH_SIZE = 4
# Up to this many samples an immediate run is offered first; more go to a delegated run
IMMEDIATE_MAX_SAMPLES = 8
PROGRESS_EVERY_S = 5.0


class RunFASeg(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="run_faseg",
            label="FA-Seg: segment images",
            description="Training-free open-vocabulary segmentation from one diffusion pass",
            dynamic=True,
            execute_as_generator=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
            default_choice_to_delegated=True,
        )

    def resolve_execution_options(self, ctx):
        from fiftyone.operators.executor import ExecutionOptions

        try:
            many = ctx.target_view().count() > IMMEDIATE_MAX_SAMPLES
        except Exception:
            many = True
        return ExecutionOptions(
            allow_immediate_execution=True,
            allow_delegated_execution=True,
            default_choice_to_delegated=many,
        )

    def __call__(
        self,
        sample_collection,
        label_field="faseg",
        classes=None,
        classes_from=None,
        gt_field=None,
        model_path=DEFAULT_MODEL,
        threshold=DEFAULT_THRESHOLD,
        batch_size=DEFAULT_BATCH_SIZE,
        skip_existing=False,
        overwrite=False,
        output_dir=None,
        delegate=False,
        **kwargs,
    ):
        """Runs FA-Seg on a collection through this operator, as the App does.

        Example usage::

            import fiftyone.operators as foo

            run_faseg = foo.get_operator("@faseg/fiftyone-faseg/run_faseg")

            # segment now
            run_faseg(dataset, classes=["cat", "dog"], label_field="faseg")

            # queue it for `fiftyone delegated launch` workers
            run_faseg(dataset.take(1000), classes_from="tagger", delegate=True)

        Args:
            sample_collection: a :class:`fiftyone.core.collections.SampleCollection`
            label_field ("faseg"): the Segmentation field to write
            classes (None): class names (or the tagger's vocabulary)
            classes_from (None): ``"list"``, ``"mask_targets"``, ``"gt_field"`` or
                ``"tagger"``; defaults to ``"list"``
            gt_field (None): the ground truth Segmentation field
            model_path (DEFAULT_MODEL): a Hugging Face Hub id or a local SD-1.x folder
            threshold (0.55): background threshold
            batch_size (4): images per UNet call
            skip_existing (False): process only samples without ``label_field``
            overwrite (False): replace existing labels
            output_dir (None): write masks as PNGs here
            delegate (False): queue a delegated run instead of running now
            **kwargs: other parameters of the operator

        Returns:
            an :class:`fiftyone.operators.executor.ExecutionResult`
        """
        params = dict(
            label_field=label_field,
            classes=list(classes or []),
            classes_from=classes_from or "list",
            gt_field=gt_field,
            model_path=model_path,
            threshold=threshold,
            batch_size=batch_size,
            skip_existing=skip_existing,
            overwrite=overwrite,
            # the folder picker's value shape, which the input validation expects
            output_dir=dict(absolute_path=str(output_dir)) if output_dir else None,
            view_target="CURRENT_VIEW",
            **kwargs,
        )
        ctx = dict(view=sample_collection.view())
        return foo.execute_operator(self.uri, ctx, params=params, request_delegation=delegate)

    def resolve_input(self, ctx):
        inputs = types.Object()
        _run_faseg_inputs(ctx, inputs)
        return types.Property(inputs, view=types.View(label="FA-Seg: segment images"))

    def execute(self, ctx):
        from fiftyone_faseg.run import iter_segment_samples

        kwargs = run_kwargs(ctx.params)
        target = ctx.target_view()
        if ctx.params.get("ray_address"):
            # the whole run on a Ray cluster, one actor per GPU (fiftyone_faseg.distributed)
            from fiftyone_faseg.distributed import iter_segment_samples_on_ray
            from fiftyone_faseg.settings import RunSettings

            steps = iter_segment_samples_on_ray(target, address=ctx.params["ray_address"],
                                                settings=RunSettings.from_params(ctx.params))
            summary = yield from segment_with_progress(ctx, steps)
            yield _outputs(summary)
            return
        if int(ctx.params.get("num_shards") or 1) > 1:
            # fan out: one delegated run of this operator per disjoint slice
            from fiftyone_faseg.workers import queue_shards

            queued = queue_shards(target, int(ctx.params["num_shards"]), dict(ctx.params),
                                  operator_uri=self.uri, delegation_target=ctx.delegation_target)
            yield dict(processed=0, skipped=0, failed=0, queued_runs=queued)
            return
        summary = yield from segment_with_progress(ctx, iter_segment_samples(target, **kwargs))
        yield _outputs(summary)

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.int("processed", label="Segmented")
        outputs.int("skipped", label="Skipped (already labelled)")
        outputs.int("failed", label="Failed (see <label_field>_error)")
        outputs.list("queued_runs", types.String(), label="Queued runs (num_shards > 1)")
        return types.Property(outputs, view=types.View(label="FA-Seg run complete"))


def segment_with_progress(ctx, steps):
    """Drives :func:`fiftyone_faseg.run.iter_segment_samples` from an operator: progress in
    the App (immediate) or as the run's heartbeat (delegated), then a dataset reload.
    Returns the run's summary (use with ``yield from``)."""
    import time

    if ctx.delegated:
        # a first heartbeat before the model loads (see fiftyone_faseg.workers)
        ctx.set_progress(progress=0.0, label="Loading the model")
    summary, last = None, 0.0
    for done, total, summary in steps:
        label = "Segmented %d of %d samples" % (done, total)
        progress = done / total if total else 1.0
        if not ctx.delegated:
            yield ctx.ops.set_progress(progress=progress, label=label)
        elif time.monotonic() - last >= PROGRESS_EVERY_S or done == total:
            ctx.set_progress(progress=progress, label=label)
            last = time.monotonic()
    if not ctx.delegated:
        yield ctx.trigger("reload_dataset")
    return summary


def dropdown(names):
    """A dropdown of names (field names, classes) for an operator form."""
    view = types.DropdownView()
    for name in names:
        view.add_choice(name, label=name)
    return view


def run_kwargs(params):
    """The :func:`iter_segment_samples` arguments of an operator's params."""
    classes = [c for c in (params.get("classes") or []) if c and str(c).strip()]
    classes_from = params.get("classes_from") or "list"
    return dict(
        label_field=params.get("label_field") or "faseg",
        classes=classes,
        classes_from=classes_from,
        gt_field=params.get("gt_field") or None,
        model_path=params.get("model_path") or DEFAULT_MODEL,
        threshold=params.get("threshold"),
        batch_size=params.get("batch_size"),
        image_size=params.get("image_size") or None,
        skip_existing=bool(params.get("skip_existing", False)),
        overwrite=bool(params.get("overwrite", False)),
        output_dir=_dir_path(params.get("output_dir")),
        use_captioner=bool(params.get("use_captioner", False)),
        captioner_path=params.get("captioner_path") or DEFAULT_CAPTIONER,
        tagger_model=(params.get("tagger_model") or DEFAULT_TAGGER[0], params.get("tagger_pretrained") or DEFAULT_TAGGER[1]),
        store_scores=bool(params.get("store_scores", False)),
        heatmap=bool(params.get("heatmap", False)),
        pamr=params.get("pamr"),  # None keeps the config's setting
    )


def _dir_path(value):
    """A folder param: the file picker gives ``{"absolute_path": ...}``, the SDK a string."""
    if isinstance(value, dict):
        value = value.get("absolute_path") or value.get("path")
    return value or None


def _outputs(summary):
    if summary is None:
        return dict(processed=0, skipped=0, failed=0)
    return dict(processed=len(summary.processed), skipped=len(summary.skipped), failed=len(summary.failed))


def _segmentation_fields(ctx):
    return sorted(ctx.dataset.get_field_schema(embedded_doc_type=fol.Segmentation).keys())


def _run_faseg_inputs(ctx, inputs):
    inputs.view_target(ctx)

    inputs.str(
        "label_field",
        default="faseg",
        label="Label field",
        description="The Segmentation field to write (plus _candidates, _caption and _error)",
    )

    gt_fields = _segmentation_fields(ctx)
    sources = types.RadioGroup()
    sources.add_choice("list", label="Classes I name")
    if gt_fields:
        sources.add_choice("mask_targets", label="All classes of a ground truth field")
        sources.add_choice("gt_field", label="Classes present in each ground truth mask")
    sources.add_choice("tagger", label="Proposed per image (BLIP caption + CLIP tagger)")
    inputs.enum("classes_from", sources.values(), default="list",
                label="Candidate classes", view=sources)
    classes_from = ctx.params.get("classes_from", "list")

    if classes_from in ("list", "tagger"):
        prop = inputs.list(
            "classes",
            types.String(),
            required=classes_from == "list",
            label="Classes" if classes_from == "list" else "Vocabulary (empty: ground truth classes or PASCAL VOC)",
        )
        if classes_from == "list" and not ctx.params.get("classes"):
            prop.invalid = True
            prop.error_message = "Name at least one class"
    if classes_from in ("mask_targets", "gt_field") or (classes_from == "tagger" and gt_fields):
        gt = dropdown(gt_fields)
        inputs.enum("gt_field", gt.values(), required=classes_from != "tagger",
                    default=gt_fields[0] if classes_from != "tagger" else None,
                    label="Ground truth field", view=gt)

    if classes_from != "tagger":
        inputs.bool("use_captioner", default=False, label="Caption images (BLIP) for the prompt",
                    description="The paper's reconstruction prompt is '{caption} ; {classes}'")
    if classes_from == "tagger" or ctx.params.get("use_captioner"):
        inputs.str("captioner_path", default=DEFAULT_CAPTIONER, label="Captioner (BLIP)",
                   description="A Hugging Face Hub id or a local folder")
    if classes_from == "tagger":
        inputs.str("tagger_model", default=DEFAULT_TAGGER[0], label="Tagger (open_clip model or local folder)")
        inputs.str("tagger_pretrained", default=DEFAULT_TAGGER[1], label="Tagger weights (open_clip tag or file)")
    inputs.str("model_path", default=DEFAULT_MODEL, label="Diffusion model",
               description="A Hugging Face Hub id or a local folder with unet/, vae/, text_encoder/, tokenizer/")
    inputs.float("threshold", default=DEFAULT_THRESHOLD, label="Background threshold",
                 description="Paper: 0.55 VOC, 0.5 Context, 0.6 COCO Object")
    inputs.int("batch_size", default=DEFAULT_BATCH_SIZE, label="Batch size")
    inputs.int("image_size", default=512, label="Image size",
               description="Images are resized to this square before the VAE (paper: 512)")
    inputs.int("num_shards", default=1, label="Parallel runs",
               description="Above 1: queue this many delegated runs, one slice of the pending samples each, "
                           "for that many `fiftyone delegated launch` workers (one per GPU)")
    inputs.str("ray_address", required=False, label="Ray cluster address (optional)",
               description="Run on a Ray cluster instead, one model per GPU: 'auto' on a node of the cluster, or "
                           "ray://head:10001 (use a mask folder on storage the workers share; see docs/scaling.md)")
    inputs.bool("skip_existing", default=False, label="Skip samples that already have this field")
    inputs.bool("overwrite", default=False, label="Overwrite existing labels")
    inputs.bool("store_scores", default=False, label="Store score maps",
                description="Keep each sample's score maps (small float16 files) to re-threshold and sweep later")
    inputs.bool("heatmap", default=False, label="Score heatmap",
                description="Store the top class's score as <label_field>_heatmap to overlay in the App")
    inputs.bool("pamr", default=False, label="PAMR refinement",
                description="Snap the score maps to the image's colour edges before thresholding (slower)")
    inputs.file(
        "output_dir",
        required=False,
        label="Mask folder (optional)",
        description="Write masks as PNG files here instead of in the database (best for large datasets)",
        view=types.FileExplorerView(choose_dir=True, button_label="Choose a folder..."),
    )

    label_field = ctx.params.get("label_field") or "faseg"
    if (
        label_field in ctx.dataset.get_field_schema()
        and not ctx.params.get("skip_existing")
        and not ctx.params.get("overwrite")
    ):
        try:
            existing = ctx.target_view().exists(label_field).count()
        except Exception:
            existing = 0
        if existing:
            warning = inputs.view(
                "existing_warning",
                types.Warning(
                    label="%d samples already have '%s': choose skip or overwrite" % (existing, label_field)
                ),
            )
            warning.invalid = True


def register(p):
    p.register(RunFASeg)

"""The ``run_faseg`` operator: FA-Seg over a view, from the App or the SDK.

Thin over :func:`fiftyone_faseg.run.segment.iter_segment_samples` with a
:class:`fiftyone_faseg.run.settings.RunSettings` built from the form; torch, diffusers and the
model are loaded only when it executes, so the plugin always registers.
"""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from fiftyone_faseg import limits
from fiftyone_faseg.constants import DEFAULT_CAPTIONER, DEFAULT_MODEL, DEFAULT_TAGGER, DEFAULT_THRESHOLD
from fiftyone_faseg.fields import ground_truth_fields
from fiftyone_faseg.run.settings import RunSettings

from . import forms

DEFAULT_BATCH_SIZE = 4
# Up to this many target samples an immediate run is offered first; more go to a delegated
# run. An immediate run holds the App and is cut at fo.config.operator_timeout (600 s): the
# full model takes ~90 s per image on a CPU (benchmarks/RESULTS.md), so 4 images (~6 min)
# still finish there, and take ~1.5 s plus the model load on a GPU (paper: 0.36 s/image)
IMMEDIATE_MAX_SAMPLES = 4


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
        return forms.execution_options(default_delegated=_many(ctx))

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

        The operator holds its parameters to the App's limits
        (:mod:`fiftyone_faseg.limits`: bounded batch and image sizes, ``output_dir`` and
        local models under the roots the server allows); call
        :func:`fiftyone_faseg.segment_samples` for free choice.

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
            **kwargs: other parameters of the operator (any
                :class:`fiftyone_faseg.run.settings.RunSettings` field, ``ray_address``)

        Returns:
            an :class:`fiftyone.operators.executor.ExecutionResult`
        """
        settings = RunSettings.from_kwargs(
            label_field=label_field, classes=classes or (), classes_from=classes_from, gt_field=gt_field,
            model_path=model_path, threshold=threshold, batch_size=batch_size, skip_existing=skip_existing,
            overwrite=overwrite, output_dir=output_dir,
            **{k: v for k, v in kwargs.items() if k in RunSettings.fields()},
        )
        params = dict(settings.to_params(), view_target="CURRENT_VIEW",
                      **{k: v for k, v in kwargs.items() if k not in RunSettings.fields()})
        ctx = dict(view=sample_collection.view())
        return foo.execute_operator(self.uri, ctx, params=params, request_delegation=delegate)

    def resolve_input(self, ctx):
        inputs = types.Object()
        _run_faseg_inputs(ctx, inputs)
        return types.Property(inputs, view=types.View(label="FA-Seg: segment images"))

    @forms.shows_errors
    def execute(self, ctx):
        params = _typed_params(ctx)
        limits.check(params, ctx.dataset)  # what the form flags, refused however the run was asked for
        settings = RunSettings.from_params(params)
        forms.remember(ctx, "model_path", settings.model.model_path)
        target = ctx.target_view()
        from fiftyone_faseg.run.segment import iter_segment_samples

        if ctx.params.get("ray_address"):
            # the whole run on a Ray cluster, one actor per GPU, connected for this run only
            # (fiftyone_faseg.distributed.engine)
            from fiftyone_faseg.distributed.engine import RayOptions, iter_segment_samples_on_ray

            options = RayOptions(address=str(ctx.params["ray_address"]).strip())
            steps = iter_segment_samples_on_ray(target, settings=settings, options=options)
        else:
            steps = iter_segment_samples(target, settings=settings)
        summary = yield from forms.progress(ctx, steps)
        if not ctx.delegated:
            yield ctx.trigger("reload_dataset")
        forms.raise_if_all_failed(summary)
        results = forms.summary_results(summary, settings)
        yield from forms.show_output(ctx, forms.summary_outputs(results, settings.output.label_field), results,
                                     "FA-Seg run complete")


def _many(ctx):
    try:
        if ctx.selected and ctx.params.get("view_target") is None and ctx.request_params.get("view_target") is None:
            return len(ctx.selected) > IMMEDIATE_MAX_SAMPLES  # the form's default target: the selection
        return ctx.target_view().count() > IMMEDIATE_MAX_SAMPLES
    except Exception:
        return True


def _typed_params(ctx):
    """The form's parameters with the typed class names split on commas and new lines."""
    params = dict(ctx.params)
    if params.get("classes") is not None:
        params["classes"] = forms.split_classes(params["classes"])
    return params


def _run_faseg_inputs(ctx, inputs):
    inputs.view_target(ctx)
    problems = limits.problems(_typed_params(ctx), ctx.dataset)  # flagged at the end, on each property

    # 1. Where: the field, and what to do with labels already there (first, so a
    #    blocking warning is seen next to the choice that clears it)
    label_field = forms.label_field_input(
        ctx, inputs, label="Label field",
        description="The Segmentation field to write (plus _candidates, _caption and _error)",
    )
    _existing_labels_inputs(ctx, inputs, label_field)

    # 2. Which classes
    gt_fields = ground_truth_fields(ctx.dataset)
    sources = types.RadioGroup()
    sources.add_choice("list", label="Classes I name")
    if gt_fields:
        sources.add_choice("mask_targets", label="All classes of a ground truth field")
        sources.add_choice("gt_field", label="Classes present in each ground truth mask")
    sources.add_choice("tagger", label="Proposed per image (BLIP caption + CLIP tagger)")
    inputs.enum("classes_from", sources.values(), default="list", label="Candidate classes", view=sources)
    classes_from = ctx.params.get("classes_from") or "list"

    if classes_from in ("list", "tagger"):
        prop = inputs.list(
            "classes",
            types.String(),
            required=classes_from == "list",
            label="Classes" if classes_from == "list" else "Vocabulary (empty: ground truth classes or PASCAL VOC)",
            description="One per item, or several separated by commas or new lines",
        )
        if classes_from == "list" and not forms.split_classes(ctx.params.get("classes")):
            forms.flag(prop, "Name at least one class")
    if classes_from in ("mask_targets", "gt_field"):
        forms.ground_truth_input(ctx, inputs, exclude=(label_field,))
    elif classes_from == "tagger":
        forms.ground_truth_input(ctx, inputs, required=False, exclude=(label_field,),
                                 label="Ground truth field (optional: its classes as the vocabulary)")

    if classes_from != "tagger":
        inputs.bool("use_captioner", default=False, label="Caption images (BLIP) for the prompt",
                    description="The paper's reconstruction prompt is '{caption} ; {classes}'")
    if classes_from == "tagger" or ctx.params.get("use_captioner"):
        inputs.str("captioner_path", default=DEFAULT_CAPTIONER, label="Captioner (BLIP)",
                   description="A Hugging Face Hub id or a local folder")
    if classes_from == "tagger":
        inputs.str("tagger_model", default=DEFAULT_TAGGER[0], label="Tagger (open_clip model or local folder)")
        inputs.str("tagger_pretrained", default=DEFAULT_TAGGER[1], label="Tagger weights (open_clip tag or file)")

    # 3. How
    forms.model_path_input(ctx, inputs, forms.remembered(ctx, "model_path", DEFAULT_MODEL), label="Diffusion model",
                           description="A Hugging Face Hub id or a local folder with unet/, vae/, text_encoder/, "
                                       "tokenizer/")
    inputs.float("threshold", default=DEFAULT_THRESHOLD, label="Background threshold",
                 description="Paper: 0.55 VOC, 0.5 Context, 0.6 COCO Object")
    inputs.int("batch_size", default=DEFAULT_BATCH_SIZE, label="Batch size",
               description="Images per UNet call (at most %d)" % limits.MAX_BATCH_SIZE)
    inputs.int("image_size", default=512, label="Image size",
               description="Images are resized to this square before the VAE (paper: 512; %s)"
                           % ", ".join(map(str, limits.IMAGE_SIZES)))
    inputs.str("ray_address", required=False, label="Ray cluster address (optional)",
               description="Run on a Ray cluster instead, one model per GPU: 'auto' on a node of the cluster, or "
                           "ray://head:10001 (use a mask folder on storage the workers share; see docs/scaling.md)")

    # 4. What to keep
    inputs.bool("store_scores", default=False, label="Store score maps",
                description="Keep each sample's score maps (small float16 files) to re-threshold and sweep later")
    inputs.bool("heatmap", default=False, label="Score heatmap",
                description="Store the top class's score as <label_field>_heatmap to overlay in the App")
    inputs.bool("pamr", default=False, label="PAMR refinement",
                description="Snap the score maps to the image's colour edges before thresholding (slower)")
    _output_dir_input(ctx, inputs)
    forms.delegation_notice(inputs, long_run=_many(ctx))
    forms.flag_limits(inputs, problems)


def _existing_labels_inputs(ctx, inputs, label_field):
    """Skip or overwrite, offered right under the field when target samples already have it."""
    if forms.label_field_problem(ctx.dataset, label_field) or label_field not in ctx.dataset.get_field_schema():
        return
    try:
        existing = ctx.target_view().exists(label_field).count()
    except Exception:
        existing = 0
    if not existing:
        return
    skip, overwrite = ctx.params.get("skip_existing"), ctx.params.get("overwrite")
    if not (skip or overwrite):
        forms.blocker(inputs, "existing_warning", "%d target samples already have '%s'" % (existing, label_field),
                      "Choose below: skip them, or overwrite their labels")
    inputs.bool("skip_existing", default=False, label="Skip samples that already have '%s'" % label_field)
    prop = inputs.bool("overwrite", default=False, label="Overwrite their labels")
    if skip and overwrite:
        forms.flag(prop, "Choose one: skip those samples, or overwrite them")


def _output_dir_input(ctx, inputs):
    """The mask folder (flagged by :func:`fiftyone_faseg.limits.output_dir_problem`: a
    folder under the roots this server allows)."""
    label, description = "Mask folder (optional)", \
        "Write masks as PNG files here instead of in the database (best for large datasets), under %s" \
        % " or ".join(limits.output_roots(ctx.dataset))
    if isinstance(ctx.params.get("output_dir"), str):
        # from the SDK or a queued run's settings: a plain path
        inputs.str("output_dir", required=False, label=label, description=description)
    else:
        inputs.file("output_dir", required=False, label=label, description=description,
                    view=types.FileExplorerView(choose_dir=True, button_label="Choose a folder..."))


def register(p):
    p.register(RunFASeg)

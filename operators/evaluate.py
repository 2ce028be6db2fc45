"""mIoU evaluation operators: ``evaluate_faseg`` and the ``miou`` evaluation metric.

Both are thin over :mod:`fiftyone_faseg.evaluation` (numpy + FiftyOne only: no torch).
"""

import fiftyone as fo
import fiftyone.core.labels as fol
import fiftyone.operators as foo
import fiftyone.operators.types as types

import fiftyone_faseg.evaluation as ffe

from .forms import dropdown


class EvaluateFASeg(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="evaluate_faseg",
            label="FA-Seg: evaluate segmentations (mIoU)",
            description=(
                "Per-class IoU and mIoU of a segmentation field against ground "
                "truth, classes matched by name"
            ),
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
            default_choice_to_delegated=True,
        )

    def __call__(
        self,
        sample_collection,
        pred_field,
        gt_field="ground_truth",
        eval_key="faseg_eval",
        delegate=False,
    ):
        """Evaluates ``pred_field`` against ``gt_field`` via this operator, as the
        App does.

        Example usage::

            import fiftyone as fo
            import fiftyone.operators as foo

            dataset = fo.load_dataset("voc-val")
            evaluate = foo.get_operator("@faseg/fiftyone-faseg/evaluate_faseg")

            # run now
            evaluate(dataset, "faseg", gt_field="ground_truth", eval_key="faseg_eval")

            # queue a delegated run (`fiftyone delegated launch` executes it)
            evaluate(dataset, "faseg", delegate=True)

        Args:
            sample_collection: a :class:`fiftyone.core.collections.SampleCollection`
            pred_field: the name of the predicted segmentation field
            gt_field ("ground_truth"): the name of the ground truth field
            eval_key ("faseg_eval"): the evaluation key
            delegate (False): whether to queue a delegated run

        Returns:
            an :class:`fiftyone.operators.executor.ExecutionResult`
        """
        ctx = dict(view=sample_collection.view())
        params = dict(
            pred_field=pred_field,
            gt_field=gt_field,
            eval_key=eval_key,
            view_target="CURRENT_VIEW",
        )
        return foo.execute_operator(
            self.uri, ctx, params=params, request_delegation=delegate
        )

    def resolve_input(self, ctx):
        inputs = types.Object()

        _evaluate_faseg_inputs(ctx, inputs)

        view = types.View(label="FA-Seg: evaluate segmentations (mIoU)")
        return types.Property(inputs, view=view)

    def execute(self, ctx):
        target_view = ctx.target_view()
        pred_field = ctx.params["pred_field"]
        gt_field = ctx.params.get("gt_field", None) or "ground_truth"
        eval_key = ctx.params.get("eval_key", None) or "faseg_eval"

        if ctx.delegated:
            progress = fo.report_progress(
                lambda pb: ctx.set_progress(
                    progress=pb.progress, label="Evaluating segmentations"
                ),
                dt=5.0,
            )
        else:
            progress = None

        results = ffe.evaluate_faseg(
            target_view,
            pred_field,
            gt_field=gt_field,
            eval_key=eval_key,
            progress=progress,
        )

        if not ctx.delegated:
            ctx.trigger("reload_dataset")

        miou = results.miou
        return {
            "eval_key": eval_key,
            "miou": None if miou != miou else miou,
            "class_iou": results.class_iou,
            "worst_view": "%s_worst" % eval_key,
            "report": results.markdown(),
        }

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.float("miou", label="mIoU")
        outputs.str("worst_view", label="Saved view of the worst samples")
        outputs.str("report", label="Per-class IoU", view=types.MarkdownView())
        view = types.View(label="FA-Seg evaluation complete")
        return types.Property(outputs, view=view)


class MIoU(foo.EvaluationMetric):
    @property
    def config(self):
        config = foo.EvaluationMetricConfig(
            name="miou",
            label="mIoU",
            description=(
                "Mean intersection over union over the ground truth classes present "
                "(FA-Seg / MMSegmentation protocol); writes <eval_key>_miou per sample"
            ),
            eval_types=["segmentation"],
            aggregate_key="miou",
            lower_is_better=False,
            unlisted=True,
        )
        # EvaluationMetricConfig does not pass `lower_is_better` on; FiftyOne reads
        # it from `kwargs` when it stores the metric
        config.kwargs["lower_is_better"] = False
        return config

    def compute(self, samples, results, **kwargs):
        return ffe.compute_miou_metric(samples, results)

    def get_fields(self, samples, config, eval_key):
        if samples._is_frame_field(config.gt_field):
            return []

        return ["%s_miou" % eval_key]


def _evaluate_faseg_inputs(ctx, inputs):
    inputs.view_target(ctx)
    target_view = ctx.target_view()

    seg_fields = sorted(
        target_view.get_field_schema(embedded_doc_type=fol.Segmentation).keys()
    )
    if len(seg_fields) < 2:
        prop = inputs.view(
            "warning",
            types.Warning(
                label="This dataset needs two Segmentation fields",
                description=(
                    "A field of predictions (e.g. 'faseg') and one of ground truth"
                ),
            ),
        )
        prop.invalid = True
        return

    choices = dropdown(seg_fields)

    inputs.enum(
        "pred_field",
        choices.values(),
        default="faseg" if "faseg" in seg_fields else None,
        required=True,
        label="Predictions field",
        description="The field of predicted segmentations",
        view=choices,
    )

    pred_field = ctx.params.get("pred_field", None)
    if pred_field is None:
        return

    gt_choices = dropdown([name for name in seg_fields if name != pred_field])

    inputs.enum(
        "gt_field",
        gt_choices.values(),
        default="ground_truth" if "ground_truth" in seg_fields else None,
        required=True,
        label="Ground truth field",
        description="The field of ground truth segmentations",
        view=gt_choices,
    )

    gt_field = ctx.params.get("gt_field", None)
    if gt_field is None:
        return

    dataset = ctx.dataset
    for field in (pred_field, gt_field):
        if not (dataset.mask_targets.get(field) or dataset.default_mask_targets):
            prop = inputs.view(
                "no_targets_" + field,
                types.Warning(
                    label="Field '%s' has no mask_targets" % field,
                    description=(
                        "Classes are matched by name: set "
                        "dataset.mask_targets['%s'] = {1: 'cat', ...} and save"
                        % field
                    ),
                ),
            )
            prop.invalid = True

    eval_prop = inputs.str(
        "eval_key",
        default="faseg_eval",
        required=True,
        label="Evaluation key",
        description=(
            "Stores the run; per-sample mIoU goes to <eval_key>_miou and the worst "
            "samples to the saved view <eval_key>_worst"
        ),
    )

    eval_key = ctx.params.get("eval_key", None) or "faseg_eval"
    if eval_key in dataset.list_evaluations():
        info = dataset.get_evaluation_info(eval_key)
        same = (
            getattr(info.config, "pred_field", None) == pred_field
            and getattr(info.config, "gt_field", None) == gt_field
        )
        if same:
            inputs.view(
                "overwrite",
                types.Notice(label="Evaluation '%s' will be overwritten" % eval_key),
            )
        else:
            eval_prop.invalid = True
            eval_prop.error_message = (
                "Evaluation key already exists for other fields"
            )


def register(p):
    p.register(EvaluateFASeg)
    p.register(MIoU)

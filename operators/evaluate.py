"""Evaluation operators: ``evaluate_faseg`` and the ``miou`` evaluation metric.

Both are thin over :mod:`fiftyone_faseg.evaluation` (numpy + FiftyOne: no torch unless
the prediction has stored scores for the threshold curve).
"""

import numpy as np

import fiftyone.core.labels as fol
import fiftyone.operators as foo
import fiftyone.operators.types as types

import fiftyone_faseg.evaluation as ffe
from fiftyone_faseg.evaluation.outputs import check_free, output_names
from fiftyone_faseg.fields import written_by_faseg
from fiftyone_faseg.run.settings import INFO_KEY as RUN_INFO_KEY

from . import forms
from .forms import dropdown, ground_truth_input, percent

DEFAULT_EVAL_KEY = "faseg_eval"


class EvaluateFASeg(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="evaluate_faseg",
            label="FA-Seg: evaluate segmentations (mIoU)",
            description=(
                "Per-class IoU and mIoU of a segmentation field against ground "
                "truth, classes matched by name; per-sample IoU fields and an error overlay"
            ),
            dynamic=True,
            execute_as_generator=True,  # the App shows "Evaluated 120 / 400 samples" as it runs
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def __call__(
        self,
        sample_collection,
        pred_field,
        gt_field="ground_truth",
        eval_key=DEFAULT_EVAL_KEY,
        per_class=True,
        error_masks=True,
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
            per_class (True): write ``<eval_key>_classes`` and ``<eval_key>_confusions``
            error_masks (True): write the ``<eval_key>_errors`` overlay
            delegate (False): whether to queue a delegated run

        Returns:
            an :class:`fiftyone.operators.executor.ExecutionResult`
        """
        ctx = dict(view=sample_collection.view())
        params = dict(
            pred_field=pred_field,
            gt_field=gt_field,
            eval_key=eval_key,
            per_class=per_class,
            error_masks=error_masks,
            view_target="CURRENT_VIEW",
        )
        return foo.execute_operator(self.uri, ctx, params=params, request_delegation=delegate)

    def resolve_input(self, ctx):
        inputs = types.Object()
        if ctx.params.get("reevaluate"):
            inputs.str("reevaluate", label="Evaluation to run again", required=True)
        else:
            _evaluate_faseg_inputs(ctx, inputs)
        return types.Property(inputs, view=types.View(label="FA-Seg: evaluate segmentations (mIoU)"))

    def execute(self, ctx):
        # counts while it runs: streamed to the App, a delegated run's heartbeat
        return forms.reporting(ctx, self, lambda report: self._evaluate(ctx, report), "Evaluated %d / %d samples")

    def _evaluate(self, ctx, report):
        progress = None if report is None else (lambda pb: report(pb.iteration, pb.total))
        if ctx.params.get("reevaluate"):
            eval_key = ctx.params["reevaluate"]
            results = ffe.reevaluate_faseg(ctx.dataset, eval_key, progress=progress)
        else:
            eval_key = ctx.params.get("eval_key") or DEFAULT_EVAL_KEY
            results = ffe.evaluate_faseg(
                ctx.target_view(),
                ctx.params["pred_field"],
                gt_field=ctx.params.get("gt_field") or "ground_truth",
                eval_key=eval_key,
                per_class=bool(ctx.params.get("per_class", True)),
                error_masks=bool(ctx.params.get("error_masks", True)),
                progress=progress,
            )

        out = evaluation_outputs(results, eval_key)
        if not ctx.delegated:
            if out["warning"]:
                ctx.ops.notify(out["warning"], variant="warning")
            ctx.trigger("reload_dataset")
        return out

    def resolve_output(self, ctx):
        if not ctx.results:
            return None  # an App run showed its results as it ended (forms.reporting)
        outputs = types.Object()
        warning = ctx.results.get("warning")
        if warning:
            outputs.view("warning_notice", types.Warning(label="Samples left out", description=warning))
        outputs.str("miou", label="mIoU")
        outputs.str("samples", label="Samples evaluated")
        outputs.str("worst_view", label="Saved view of the worst samples")
        outputs.str("report", label="Per-class IoU", view=types.MarkdownView())
        return types.Property(outputs, view=types.View(label="FA-Seg evaluation complete"))


def evaluation_outputs(results, eval_key):
    """What the operator returns: the mIoU in percent, the sample counts (with a warning
    when samples were left out), the per-class table."""
    counts = results.summary or {}
    evaluated = counts.get("evaluated") or 0
    total = evaluated + (counts.get("no_prediction") or 0) + (counts.get("no_ground_truth") or 0)
    warning = None
    problems = []
    if counts.get("no_prediction"):
        problems.append("%d had no '%s' mask (failed or not segmented)" % (counts["no_prediction"], results.config.pred_field))
    if counts.get("no_ground_truth"):
        problems.append("%d had no '%s' mask" % (counts["no_ground_truth"], results.config.gt_field))
    if problems:
        warning = "%d of %d samples were left out of the mIoU: %s. The mIoU is over %d samples." % (
            total - evaluated, total, "; ".join(problems), evaluated)
    miou = results.miou
    return {
        "eval_key": eval_key,
        "miou": percent(None if np.isnan(miou) else miou),
        "miou_value": None if np.isnan(miou) else float(miou),
        "class_iou": {c: round(v, 6) for c, v in results.class_iou.items()},
        "samples": "%d of %d" % (evaluated, total),
        "counts": {k: counts.get(k) for k in ("evaluated", "no_prediction", "no_ground_truth")},
        "warning": warning,
        "worst_view": "%s_worst" % eval_key,
        "report": results.markdown(),
    }


class MIoU(foo.EvaluationMetric):
    """The dataset mIoU (in percent) of a segmentation evaluation's pixel confusion matrix, for
    FiftyOne's own methods (``custom_metrics=["@faseg/fiftyone-faseg/miou"]``).
    :func:`fiftyone_faseg.evaluation.evaluate_faseg` stores the same value itself."""

    @property
    def config(self):
        config = foo.EvaluationMetricConfig(
            name="miou",
            label=ffe.MIOU_LABEL,
            description=(
                "Mean intersection over union over the ground truth classes present, in "
                "percent (FA-Seg / MMSegmentation protocol)"
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
        return ffe.as_percent(ffe.miou_of(results))  # in percent, as FA-Seg's own runs store it

    def get_fields(self, samples, config, eval_key):
        return []


def prediction_fields(dataset):
    """Segmentation fields that can be evaluated: FA-Seg runs' first, the latest made
    first; never an evaluation's own output."""
    names = dataset.get_field_schema(embedded_doc_type=fol.Segmentation)
    runs = [n for n in names if RUN_INFO_KEY in (dataset.get_field(n).info or {})]
    others = [n for n in names if n not in runs and not written_by_faseg(dataset, n)]
    return sorted(runs, key=lambda n: (_created_at(dataset, n), n), reverse=True) + sorted(others)


def evaluated_predictions(dataset):
    """Fields that an evaluation of the dataset (FA-Seg's or FiftyOne's) read as
    predictions: never offered as ground truth."""
    fields = set()
    for key in dataset.list_evaluations():
        pred_field = getattr(dataset.get_evaluation_info(key).config, "pred_field", None)
        if pred_field:
            fields.add(pred_field)
    return fields


def _created_at(dataset, name):
    created = getattr(dataset.get_field(name), "created_at", None)
    return created.timestamp() if created is not None else 0.0


def _evaluate_faseg_inputs(ctx, inputs):
    # the whole dataset unless the user picks otherwise: an evaluation of a selection would
    # replace the dataset-wide one under the same key
    inputs.view_target(ctx, default_target="DATASET")
    dataset = ctx.dataset
    preds = prediction_fields(dataset)
    if not preds:
        inputs.view("no_pred", types.Warning(
            label="This dataset has no Segmentation field to evaluate",
            description="Run FA-Seg first (run_faseg), or add a field of predicted masks",
        )).invalid = True
        return

    inputs.enum("pred_field", preds, default=preds[0], required=True, label="Predictions field",
                description="The field of predicted segmentations", view=dropdown(preds))
    pred_field = ctx.params.get("pred_field") or preds[0]
    gt_field = ground_truth_input(ctx, inputs, exclude={pred_field} | evaluated_predictions(dataset),
                                  description="Fields FA-Seg wrote, and fields evaluated as predictions, "
                                              "are never offered")
    if gt_field is None:
        return

    missing = [f for f in (pred_field, gt_field) if not (dataset.mask_targets.get(f) or dataset.default_mask_targets)]
    for field in missing:
        inputs.view("no_targets_" + field, types.Warning(
            label="Field '%s' has no mask_targets" % field,
            description="Classes are matched by name: set dataset.mask_targets['%s'] = "
                        "{1: 'cat', ...} and save" % field,
        )).invalid = True
    if not missing:  # the masks themselves, on the first sample that has both, before Execute
        problem = ffe.mask_format_problem(ctx.target_view(), pred_field, gt_field)
        if problem:
            inputs.view("mask_format", types.Warning(label="These masks cannot be evaluated",
                                                     description=problem)).invalid = True

    eval_prop = inputs.str(
        "eval_key",
        default=DEFAULT_EVAL_KEY,
        required=True,
        label="Evaluation key",
        description="Per-sample fields <eval_key>_miou, _classes, _confusions, _errors; "
                    "saved view <eval_key>_worst",
    )
    eval_key = ctx.params.get("eval_key") or DEFAULT_EVAL_KEY
    inputs.bool("per_class", default=True, label="Per-class IoU and confusion pairs per sample",
                description="<eval_key>_classes and <eval_key>_confusions (filter them in the sidebar)")
    inputs.bool("error_masks", default=True, label="Error overlay",
                description="<eval_key>_errors: correct / wrong class / missed / false alarm")

    if not eval_key.isidentifier():
        eval_prop.invalid = True
        eval_prop.error_message = "Use letters, digits and underscores (e.g. faseg_eval)"
        return
    problem = _output_problem(dataset, eval_key, pred_field, gt_field, ctx.params)
    if problem:
        eval_prop.invalid = True
        eval_prop.error_message = problem
    elif eval_key in dataset.list_evaluations():
        info = dataset.get_evaluation_info(eval_key)
        same = (getattr(info.config, "pred_field", None) == pred_field
                and getattr(info.config, "gt_field", None) == gt_field
                and getattr(info.config, "method", None) == "faseg")
        if not same:
            eval_prop.invalid = True
            eval_prop.error_message = "Evaluation key already exists for other fields"
        elif ffe.is_stale(dataset, eval_key):
            inputs.view("stale", types.Notice(
                label="Evaluation '%s' is stale: '%s' changed since; executing re-evaluates it" % (eval_key, pred_field)))
        else:
            inputs.view("overwrite", types.Notice(label="Evaluation '%s' will be overwritten" % eval_key))


def _output_problem(dataset, eval_key, pred_field, gt_field, params):
    """Why the evaluation could not write its fields under ``eval_key`` (None if it can)."""
    names = output_names(eval_key, per_class=bool(params.get("per_class", True)),
                         error_masks=bool(params.get("error_masks", True)))
    try:
        check_free(dataset, eval_key, names, reads=(pred_field, gt_field))
    except ValueError as e:
        return str(e)
    return None


def register(p):
    p.register(EvaluateFASeg)
    p.register(MIoU)

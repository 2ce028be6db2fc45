"""The operators as the App meets them, without a browser: every form check flags its
property before Execute, run-level errors and all-failed runs fail with the reason,
immediate runs end with a summary the App shows, defaults never pick an FA-Seg field as
ground truth, and the operator modules share helpers only through ``operators/forms.py``.

Forms are resolved with a real :class:`ExecutionContext`; generator operators are driven
as the App server drives them (their messages are what the App receives).
"""

import ast
from pathlib import Path

import fiftyone as fo
import fiftyone.operators as foo
import numpy as np
import pytest
from fiftyone.operators.delegated import DelegatedOperationService
from fiftyone.operators.executor import ExecutionContext, ExecutionRunState, Executor
from PIL import Image

from fiftyone_faseg.constants import MODEL_COMPONENTS, operator_uri
from fiftyone_faseg.run.settings import RunSettings

ROOT = Path(__file__).resolve().parents[1]
RUN = operator_uri("run_faseg")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("op-images")
    paths = []
    for i in range(4):
        img = np.zeros((48, 64, 3), np.uint8)
        img[:] = (40 + 50 * i, 120, 200 - 40 * i)
        img[10:35, 10 + 5 * i : 40 + 5 * i] = (220, 60 + 30 * i, 40)
        paths.append(str(folder / ("%d.png" % i)))
        Image.fromarray(img).save(paths[-1])
    return paths


@pytest.fixture
def ds(images):
    """Four images with a ground truth; an unrelated prediction field sorts before it."""
    dataset = fo.Dataset()
    samples = []
    for i, path in enumerate(images):
        gt = np.zeros((48, 64), np.uint8)
        gt[10:35, 10 + 5 * i : 40 + 5 * i] = 1 + i % 2
        samples.append(fo.Sample(filepath=path, ground_truth=fo.Segmentation(mask=gt),
                                 aaa_pred=fo.Segmentation(mask=gt)))
    dataset.add_samples(samples)
    dataset.mask_targets = {"ground_truth": {1: "cat", 2: "dog"}}
    dataset.save()
    yield dataset
    dataset.delete()


def run_params(tiny_sd_dir, **changes):
    params = dict(classes=["cat", "dog"], model_path=str(tiny_sd_dir), image_size=128, threshold=0.3,
                  batch_size=2, view_target="CURRENT_VIEW")
    params.update(changes)
    return params


def context(ds, params, view=None, selected=None, delegated=False):
    return ExecutionContext(
        request_params=dict(dataset_name=ds.name, view=(view if view is not None else ds.view())._serialize(),
                            selected=selected or [], params=dict(params), delegated=delegated),
        executor=Executor(),
    )


def form(uri, ds, params, **kwargs):
    """The form's properties, by name, in the order the App shows them."""
    return foo.get_operator(uri).resolve_input(context(ds, params, **kwargs)).type.properties


def errors(props):
    return {name: p.error_message for name, p in props.items() if p.invalid}


def drive(uri, ds, params, **kwargs):
    """Runs a generator operator as the App server does: returns the App messages
    ``[(operator, params)]`` and the exception it ended with (None)."""
    messages, error = [], None
    try:
        for message in foo.get_operator(uri).execute(context(ds, params, **kwargs)):
            if isinstance(message, fo.operators.message.GeneratedMessage):
                messages.append((message.body.operator_uri, message.body.params))
    except Exception as e:  # what the App would not see without the notification
        error = e
    return messages, error


def shown(messages):
    """The results of the last ``show_output`` message (the summary view)."""
    outputs = [p for name, p in messages if name == "show_output"]
    assert outputs, [name for name, _ in messages]
    return outputs[-1]["results"]


# ---------------------------------------------------------------------- form checks


@pytest.mark.parametrize("change, name, message", [
    (dict(model_path="/no/such/folder"), "model_path", "neither an existing folder nor a Hugging Face Hub id"),
    (dict(model_path="not a model"), "model_path", "neither an existing folder"),
    (dict(threshold=1.5), "threshold", "between 0 and 1"),
    (dict(threshold=-0.1), "threshold", "between 0 and 1"),
    (dict(batch_size=0), "batch_size", "at least 1"),
    (dict(image_size=300), "image_size", "128, 256, 512, 1024"),
    (dict(label_field="ground_truth"), "label_field", "not written by FA-Seg"),
    (dict(label_field="aaa_pred"), "label_field", "not written by FA-Seg"),
    (dict(label_field="filepath"), "label_field", "holds StringField values"),
    (dict(label_field="metadata"), "label_field", "holds ImageMetadata values"),
    (dict(label_field="ground_truth.mask"), "label_field", "embedded path"),
    (dict(label_field="my field"), "label_field", "not a field name"),
    (dict(classes=[]), "classes", "Name at least one class"),
    (dict(classes=[" ", ""]), "classes", "Name at least one class"),
])
def test_run_form_flags_each_bad_input_before_execute(ds, tiny_sd_dir, change, name, message):
    assert errors(form(RUN, ds, run_params(tiny_sd_dir))) == {}
    found = errors(form(RUN, ds, run_params(tiny_sd_dir, **change)))
    assert list(found) == [name] and message in found[name], found
    # the same check refuses the SDK call, naming the problem, before anything is written
    with pytest.raises(Exception, match=name):
        foo.execute_operator(RUN, ctx=dict(view=ds.view(), params=run_params(tiny_sd_dir, **change)))
    assert "faseg" not in ds.get_field_schema()


def test_model_path_check(tmp_path, tiny_sd_dir):
    from fiftyone_faseg.run.checks import model_path_problem  # what the model form flags

    partial = tmp_path / "partial"
    (partial / "unet").mkdir(parents=True)
    (tmp_path / "file.bin").write_bytes(b"x")
    assert model_path_problem(str(tiny_sd_dir)) is None
    assert model_path_problem("XCLiu/2_rectified_flow_from_sd_1_5") is None  # a Hub id
    assert "lacks vae/, text_encoder/, tokenizer/" in model_path_problem(str(partial))
    assert "is a file" in model_path_problem(str(tmp_path / "file.bin"))
    assert "neither" in model_path_problem(str(tmp_path / "missing" / "model"))
    assert "neither" in model_path_problem("./models/sd")


def test_model_components_match_the_core():
    from faseg_core.pipeline import COMPONENTS

    assert MODEL_COMPONENTS == COMPONENTS


def test_ground_truth_choices_never_offer_or_default_to_faseg_fields(ds, tiny_sd_dir):
    ff_params = run_params(tiny_sd_dir)
    foo.execute_operator(RUN, ctx=dict(view=ds.view(), params=ff_params))
    ds.mask_targets["aaa_pred"] = {1: "cat"}  # a foreign field with mask_targets, named first
    ds.save()
    for classes_from in ("mask_targets", "gt_field", "tagger"):
        props = form(RUN, ds, dict(ff_params, label_field="new", classes_from=classes_from))
        gt = props["gt_field"]
        # FA-Seg's field is never offered; likeliest first: with mask_targets, named like ground truth
        assert gt.type.values == ["ground_truth", "aaa_pred"]
        assert gt.default == (None if classes_from == "tagger" else "ground_truth")
    del ds.mask_targets["aaa_pred"]
    ds.save()
    gt = form(RUN, ds, dict(ff_params, label_field="new", classes_from="gt_field"))["gt_field"]
    assert gt.default == "ground_truth" and gt.type.values == ["ground_truth", "aaa_pred"]


def test_existing_labels_warning_sits_at_the_top_with_its_choices(ds, tiny_sd_dir):
    params = run_params(tiny_sd_dir)
    foo.execute_operator(RUN, ctx=dict(view=ds.view(), params=params))
    props = form(RUN, ds, params)
    names = list(props)
    assert errors(props) == {"existing_warning": "4 target samples already have 'faseg'"}
    # right under the field, with the two choices that clear it, before anything else
    i = names.index("label_field")
    assert names[i + 1 : i + 4] == ["existing_warning", "skip_existing", "overwrite"]
    assert errors(form(RUN, ds, dict(params, overwrite=True))) == {}
    both = errors(form(RUN, ds, dict(params, overwrite=True, skip_existing=True)))
    assert list(both) == ["overwrite"] and "Choose one" in both["overwrite"]
    # an FA-Seg field may be written again: a field the run wrote is never "foreign"
    assert "label_field" not in errors(props)


# ---------------------------------------------------------------------- outcomes


def test_immediate_run_ends_with_a_summary_of_the_selected_samples(ds, tiny_sd_dir, tmp_path):
    ids = ds.limit(2).values("id")
    params = run_params(tiny_sd_dir, view_target="SELECTED_SAMPLES", output_dir=str(tmp_path / "masks"))
    messages, error = drive(RUN, ds, params, selected=ids)
    assert error is None, error
    names = [name for name, _ in messages]
    assert names.count("set_progress") == 1 and "reload_dataset" in names  # 2 samples, batch_size 2
    root = str(tmp_path / "masks" / str(ds._doc.id))  # the run's files, under the dataset's folder
    assert shown(messages) == dict(processed=2, skipped=0, failed=0, reasons=[], files=root)
    ds.reload()
    assert sorted(ds.exists("faseg").values("id")) == sorted(ids)

    # a second run skipping what exists reports the skipped samples
    messages, error = drive(RUN, ds, dict(params, view_target="CURRENT_VIEW", skip_existing=True))
    assert error is None, error
    assert shown(messages)["processed"] == 2 and shown(messages)["skipped"] == 2


def test_partly_failed_run_reports_distinct_reasons(ds, tiny_sd_dir, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    ds.add_samples([fo.Sample(filepath=str(broken)), fo.Sample(filepath=str(tmp_path / "gone.png"))])
    messages, error = drive(RUN, ds, run_params(tiny_sd_dir))
    assert error is None, error
    results = shown(messages)
    assert results["processed"] == 4 and results["failed"] == 2
    assert len(results["reasons"]) == 2 and all("(1 sample)" in r for r in results["reasons"])
    assert results["files"] == "in the database"


def test_run_whose_samples_all_fail_fails_with_the_reason(ds, tiny_sd_dir, tmp_path):
    missing = fo.Dataset()
    missing.add_samples([fo.Sample(filepath=str(tmp_path / ("gone%d.png" % i))) for i in range(3)])
    try:
        messages, error = drive(RUN, missing, run_params(tiny_sd_dir))
        assert isinstance(error, RuntimeError) and "every sample of the run failed (3)" in str(error)
        assert str(error).count("does not exist") == 1 and "(3 samples)" in str(error)  # one reason, 3 images
        notes = [p for name, p in messages if name == "notify"]
        assert notes and notes[-1]["variant"] == "error" and "every sample" in notes[-1]["message"]
        assert "show_output" not in [name for name, _ in messages]

        # delegated: the queued run ends FAILED with the reason
        foo.execute_operator(RUN, ctx=dict(view=missing.view(), params=run_params(tiny_sd_dir, overwrite=True)),
                             request_delegation=True)
        svc = DelegatedOperationService()
        svc.execute_queued_operations(dataset_name=missing.name)
        (op,) = svc.list_operations(dataset_name=missing.name)
        assert op.run_state == ExecutionRunState.FAILED
        assert "every sample of the run failed" in op.result.error
    finally:
        missing.delete()


def test_run_level_error_is_notified_in_the_app_and_raised(ds, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    params = dict(classes=["cat"], model_path="nobody/no-such-faseg-model", view_target="CURRENT_VIEW")
    assert errors(form(RUN, ds, params)) == {}  # looks like a Hub id: only loading can tell
    messages, error = drive(RUN, ds, params)
    assert isinstance(error, OSError) and "nobody/no-such-faseg-model" in str(error)
    (note,) = [p for name, p in messages if name == "notify"]
    assert note["variant"] == "error" and "FA-Seg: segment images failed" in note["message"]
    assert "no-such-faseg-model" in note["message"]
    with pytest.raises(Exception, match="no-such-faseg-model"):
        foo.execute_operator(RUN, ctx=dict(view=ds.view(), params=params))


def test_sdk_call_builds_run_settings(ds, tiny_sd_dir):
    run_faseg = foo.get_operator(RUN)
    result = run_faseg(ds.limit(1), classes=["cat"], model_path=str(tiny_sd_dir), image_size=128, label_field="sdk")
    assert result.error is None and ds.count("sdk") == 1
    with pytest.raises(TypeError, match="unknown run settings"):
        RunSettings.from_kwargs(label_field="x", colour="red")


def test_scheduling_defaults(ds, monkeypatch):
    op = foo.get_operator(RUN)
    monkeypatch.setattr(fo.config, "allow_legacy_orchestrators", False)
    many = ds.view()
    assert not op.resolve_execution_options(context(ds, {})).default_choice_to_delegated  # cannot schedule here
    monkeypatch.setattr(fo.config, "allow_legacy_orchestrators", True)
    import sys

    monkeypatch.setattr(sys.modules[type(op).__module__], "IMMEDIATE_MAX_SAMPLES", 2)
    assert op.resolve_execution_options(context(ds, {}, view=many)).default_choice_to_delegated
    assert not op.resolve_execution_options(context(ds, {}, view=ds.limit(2))).default_choice_to_delegated
    props = form(RUN, ds, dict(classes=["cat"]))
    assert "fiftyone delegated launch" in props["worker_notice"].view.label
    monkeypatch.setattr(fo.config, "allow_legacy_orchestrators", False)
    props = form(RUN, ds, dict(classes=["cat"]))
    assert "FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS=true" in props["scheduling_notice"].view.label
    # fast operators run immediately by default
    for name in ("rethreshold_faseg", "sweep_faseg_threshold"):
        assert not foo.get_operator(operator_uri(name)).config.default_choice_to_delegated


# ---------------------------------------------------------------------- iterating


@pytest.fixture
def scored(ds, tiny_sd_dir):
    foo.execute_operator(RUN, ctx=dict(view=ds.view(), params=run_params(tiny_sd_dir, store_scores=True)))
    from fiftyone_faseg.evaluation import evaluate_faseg

    evaluate_faseg(ds, "faseg", gt_field="ground_truth", eval_key="ev")
    return ds


def test_rethreshold_form_checks_and_stale_evaluation(scored):
    uri = operator_uri("rethreshold_faseg")
    params = dict(label_field="faseg", threshold=0.4, view_target="CURRENT_VIEW")
    assert errors(form(uri, scored, params)) == {}
    assert "between 0 and 1" in errors(form(uri, scored, dict(params, threshold=2)))["threshold"]
    bad = errors(form(uri, scored, dict(params, out_field="ground_truth")))
    assert "not written by FA-Seg" in bad["out_field"]
    assert list(form(uri, scored, params)["label_field"].type.values) == ["faseg"]  # scored FA-Seg fields only
    result = foo.execute_operator(uri, ctx=dict(view=scored.view(), params=params))
    assert result.result["written"] == 4 and result.result["field"] == "faseg"
    assert result.result["stale"] == "Evaluation ev of 'faseg' is now stale: run evaluate_faseg again"
    result = foo.execute_operator(uri, ctx=dict(view=scored.view(), params=dict(params, out_field="faseg_04")))
    assert result.result["stale"] is None  # nothing evaluated that field


def test_sweep_in_percent_with_a_readable_plot(scored):
    uri = operator_uri("sweep_faseg_threshold")
    params = dict(label_field="faseg", start=0.3, stop=0.8, step=0.25, view_target="CURRENT_VIEW")
    props = form(uri, scored, params)
    assert props["gt_field"].default == "ground_truth" and "faseg" not in props["gt_field"].type.values
    assert "To must be above From" in errors(form(uri, scored, dict(params, start=0.8, stop=0.3)))["stop"]
    assert "Step" in errors(form(uri, scored, dict(params, step=0)))["step"]
    out = foo.execute_operator(uri, ctx=dict(view=scored.view(), params=dict(params, gt_field="ground_truth"))).result
    from fiftyone_faseg.analysis.iterate import sweep

    expected = sweep(scored, "faseg", "ground_truth", [0.3, 0.55, 0.8])
    best = max((v for v in expected.values() if v is not None), default=None)
    assert out["best_miou"] == best and out["best_miou_percent"] == ("%.1f %%" % (100 * best) if best is not None
                                                                     else "–")
    assert [row["miou"] for row in out["table"]] == [
        "–" if v is None else "%.1f %%" % (100 * v) for v in expected.values()]
    assert out["plot"][0]["y"] == [None if v is None else round(100 * v, 1) for v in expected.values()]
    outputs = foo.get_operator(uri).resolve_output(context(scored, params)).type.properties
    layout = outputs["plot"].view.layout
    assert layout["height"] >= 300 and layout["margin"]["b"] >= 50
    assert layout["xaxis"]["title"]["text"] and "%" in layout["yaxis"]["title"]["text"]


def test_edit_candidates_confirms_and_rerun_says_evaluations_are_stale(scored, tiny_sd_dir):
    edit, rerun = operator_uri("edit_candidates"), operator_uri("rerun_faseg")
    target = scored.first().id
    params = dict(label_field="faseg", mode="replace", classes=[], view_target="SELECTED_SAMPLES")
    assert "Name at least one class" in errors(form(edit, scored, params, selected=[target]))["classes"]
    result = foo.execute_operator(edit, ctx=dict(view=scored.view(), selected=[target],
                                                 params=dict(params, classes=["dog"], new_classes="bird")))
    assert result.result["edited"] == 1
    assert result.result["message"].startswith("Candidates of 1 samples: set to dog, bird.")
    out_props = foo.get_operator(edit).resolve_output(context(scored, params)).type.properties
    assert {"edited", "message"} <= set(out_props)

    params = dict(label_field="faseg", view_target="SELECTED_SAMPLES")
    props = form(rerun, scored, params, selected=[target])
    assert props["model_path"].default == str(tiny_sd_dir) and props["threshold"].default == 0.3
    assert "will be stale" in props["stale_notice"].view.label
    assert "neither" in errors(form(rerun, scored, dict(params, model_path="/nope"), selected=[target]))["model_path"]
    messages, error = drive(rerun, scored, params, selected=[target])
    assert error is None, error
    results = shown(messages)
    assert results["processed"] == 1 and results["stale"].startswith("Evaluation ev of 'faseg' is now stale")


# ---------------------------------------------------------------------- structure


def test_operator_modules_share_helpers_only_through_forms():
    for path in sorted((ROOT / "operators").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                imported = node.module or ",".join(a.name for a in node.names)
                assert imported == "forms", "%s imports .%s: share helpers through operators/forms.py" % (
                    path.name, imported)
        names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        if path.name != "forms.py":
            assert not names & {"dropdown", "choices", "_choices", "_segmentation_fields", "_field_choice",
                                "_dir_path", "segment_with_progress", "run_kwargs"}, path.name

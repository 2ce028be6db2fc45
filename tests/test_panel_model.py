"""The FA-Seg panel's numbers, without a browser: what it shows (``panel_model``) is rebuilt
whole from the stored evaluation and equals it; a failed evaluation gives a message; stale
follows the field's revision; every class, confusion cell, missed and false-alarm view opens
its samples; the error overlay gets four colours; the evaluation form's defaults are safe.
"""

import sys

import numpy as np
import pytest
from PIL import Image

import fiftyone as fo
import fiftyone.operators as foo
from fiftyone.operators.delegated import DelegatedOperationService
from fiftyone.operators.executor import ExecutionContext, _parse_ctx

import fiftyone_faseg.evaluation as ffe
from fiftyone_faseg.constants import operator_uri
from fiftyone_faseg.run.settings import RunRecord

CLASSES = {1: "cat", 2: "dog", 3: "bird", 4: "cow"}
N = 6


def _module(name):
    """A module of the plugin as FiftyOne loaded it (the working tree, see conftest)."""
    return sys.modules[type(foo.get_operator(operator_uri(name))).__module__]


@pytest.fixture(scope="module")
def panel():
    return _module("faseg_panel")


def _masks(i):
    gt = np.zeros((60, 80), np.uint8)
    gt[10:50, 10:40] = 1 if i < 3 else 2  # cat in three samples, dog in the others
    gt[30:55, 50:75] = 3  # bird everywhere
    if i == 0:
        gt[0:8, 60:80] = 4  # cow in one sample, never predicted: IoU 0
    pred = np.roll(gt, 2 * i, axis=1)
    pred[pred == 4] = 0
    pred[0:5, 0:10] = 3 if i % 2 else 0  # a bird false alarm in some samples
    return gt, pred


@pytest.fixture()
def dataset(tmp_path, request):
    ds = fo.Dataset()
    samples = []
    for i in range(N):
        path = tmp_path / ("%d.png" % i)
        Image.fromarray(np.full((60, 80, 3), 40 * i, np.uint8)).save(path)
        gt, pred = _masks(i)
        samples.append(fo.Sample(filepath=str(path), ground_truth=fo.Segmentation(mask=gt),
                                 faseg=fo.Segmentation(mask=pred)))
    ds.add_samples(samples)
    ds.mask_targets = {"ground_truth": CLASSES, "faseg": CLASSES}
    ds.save()
    RunRecord(threshold=0.55).write(ds, "faseg")
    ffe.evaluate_faseg(ds, "faseg", eval_key="ev")
    yield ds
    ds.delete()


def _expected_confusion(ds):
    """The pixel confusion matrix counted here from the masks (rows: ground truth)."""
    conf = np.zeros((5, 5), np.int64)
    for gt, pred in zip(ds.values("ground_truth.mask"), ds.values("faseg.mask")):
        conf += np.bincount(gt.ravel().astype(int) * 5 + pred.ravel(), minlength=25).reshape(5, 5)
    return conf


def _iou_trace(data):
    (key,) = [k for k in data if k.startswith("iou_")]
    return key, {t["name"]: t for t in data[key]}["IoU"]


def test_chart_and_table_equal_the_stored_results(dataset, panel):
    results = dataset.load_evaluation_results("ev")
    state, data = panel.panel_model(dataset, "ev")
    assert "message" not in state and state["stale"] is False

    _, trace = _iou_trace(data)
    assert sorted(trace["x"]) == sorted(results.class_iou)
    np.testing.assert_allclose(trace["y"], [100 * results.class_iou[c] for c in trace["x"]], rtol=1e-12)
    assert trace["y"] == sorted(trace["y"])  # worst first
    assert results.class_iou["cow"] == 0.0 and "cow" in trace["x"]  # a zero-IoU class has its column

    conf = _expected_confusion(dataset)
    names = ["background"] + [CLASSES[k] for k in sorted(CLASSES)]
    rows = {r["class"]: r for r in panel.class_table(results)}
    masks = list(zip(dataset.values("ground_truth.mask"), dataset.values("faseg.mask")))
    for k, name in enumerate(names):
        tp, gt, pred = conf[k, k], conf[k].sum(), conf[:, k].sum()
        row = rows[name]
        assert row["iou"] == pytest.approx(tp / (gt + pred - tp), abs=1e-12)
        assert row["f1"] == pytest.approx(2 * tp / (gt + pred), abs=1e-12)
        assert row["recall"] == pytest.approx(tp / gt, abs=1e-12)
        assert row["precision"] == (None if pred == 0 else pytest.approx(tp / pred, abs=1e-12))
        assert (row["gt_pixels"], row["pred_pixels"]) == (gt, pred)
        assert row["samples"] == sum(bool((g == k).any() or (p == k).any()) for g, p in masks)

    # the table the App shows: every class, worst IoU first, its samples opened by row
    table = data["table"]
    assert [r["class"] for r in table] == [r["class"] for r in panel.sort_rows(list(rows.values()), "iou")]
    assert state["table_classes"] == [r["class"] for r in table]  # a row event's index names its class
    assert table[0]["class"] == "cow" and table[0]["iou"] == "0.0 %"
    by_pixels = panel.sort_rows(list(rows.values()), "gt_pixels")
    assert [r["gt_pixels"] for r in by_pixels] == sorted((r["gt_pixels"] for r in rows.values()), reverse=True)

    # the confusion heatmap: each GT row in percent of its pixels
    heat = [v for k, v in data.items() if k.startswith("heat_")][0][0]
    assert heat["x"] == names and heat["y"] == names
    np.testing.assert_allclose(heat["customdata"], conf)
    np.testing.assert_allclose(heat["z"], np.round(100 * conf / conf.sum(axis=1, keepdims=True), 2))


def test_a_new_evaluation_replaces_the_panel_whole(dataset, panel):
    state, data = panel.panel_model(dataset, "ev")
    old_key, _ = _iou_trace(data)

    # the prediction changes: all background (every class's IoU is 0); the run records it
    for sample in dataset:
        sample["faseg"] = fo.Segmentation(mask=np.zeros((60, 80), np.uint8))
        sample.save()
    RunRecord.read(dataset, "faseg").new_revision().write(dataset, "faseg")
    state, _ = panel.panel_model(dataset, "ev")
    assert state["stale"] is True

    ffe.reevaluate_faseg(dataset, "ev")
    results = dataset.load_evaluation_results("ev")
    state, data = panel.panel_model(dataset, "ev")
    assert state["stale"] is False
    key, trace = _iou_trace(data)
    assert key != old_key and [k for k in data if k.startswith("iou_")] == [key]
    assert trace["y"] == [100 * results.class_iou[c] for c in trace["x"]]
    assert [v for c, v in zip(trace["x"], trace["y"]) if c != "background"] == [0.0] * 4
    assert trace["text"] == ["%.1f %%" % v for v in trace["y"]]


def test_a_failed_evaluation_leaves_the_panel_working(dataset, panel):
    ffe.evaluate_faseg(dataset, "faseg", eval_key="bad")
    doc = dataset._doc.evaluations["bad"]  # half-registered: the run exists, its results do not
    doc.results = None
    doc.save()
    dataset.clear_cache()

    assert "bad" in ffe.unfinished_faseg_evaluations(dataset) and "bad" in panel.evaluation_keys(dataset)
    state, data = panel.panel_model(dataset, "bad")
    assert "Evaluation 'bad' cannot be shown" in state["message"] and "no stored results" in state["message"]
    assert data == {}
    state, data = panel.panel_model(dataset, "ev")  # the others still show
    assert "message" not in state and data["table"]


def test_every_class_and_cell_opens_its_samples(dataset, panel):
    ids = dataset.values("id")
    masks = list(zip(dataset.values("ground_truth.mask"), dataset.values("faseg.mask")))

    cow = ffe.class_view(dataset, "ev", "cow")  # IoU 0: opened like any class
    assert cow.values("id") == [ids[0]]

    missed = ffe.missed_view(dataset, "ev", "cat")
    expected = [i for i, (g, p) in zip(ids, masks) if ((g == 1) & (p != 1)).any()]
    assert sorted(missed.values("id")) == sorted(expected)
    for pairs in missed.values("ev_confusions"):
        assert pairs and all(p["gt"] == "cat" and p["pred"] != "cat" for p in pairs)

    alarms = ffe.false_alarm_view(dataset, "ev", "bird")
    expected = [i for i, (g, p) in zip(ids, masks) if ((p == 3) & (g != 3)).any()]
    assert sorted(alarms.values("id")) == sorted(expected)
    pixels = [sum(p["pixels"] for p in pairs) for pairs in alarms.values("ev_confusions")]
    assert pixels == sorted(pixels, reverse=True)

    cell = ffe.confusion_view(dataset, "ev", "cat", "background")
    expected = [i for i, (g, p) in zip(ids, masks) if ((g == 1) & (p == 0)).any()]
    assert sorted(cell.values("id")) == sorted(expected)


def test_error_overlay_in_four_colours(dataset, panel):
    from fiftyone_faseg.evaluation import colors as overlay

    dataset.app_config.color_scheme = fo.ColorScheme(fields=[{"path": "ground_truth", "fieldColor": "#ffffff"}],
                                                      opacity=0.5)
    dataset.save()
    overlay.set_error_colors(dataset, "ev")
    dataset.reload()
    scheme = dataset.app_config.color_scheme
    entry = {f["path"]: f for f in scheme.fields}["ev_errors"]
    colours = {c["intTarget"]: c["color"] for c in entry["maskTargetsColors"]}
    assert set(colours) == set(ffe.ERROR_TARGETS) and len(set(colours.values())) == 4
    assert {f["path"] for f in scheme.fields} == {"ground_truth", "ev_errors"} and scheme.opacity == 0.5
    assert overlay.error_color_scheme(dataset, "ev") is None  # already drawn so: nothing to write
    legend = overlay.legend_markdown("ev")
    assert all(name in legend for name in ffe.ERROR_TARGETS.values())


def test_runs_list_shows_queued_and_done_runs(dataset, panel):
    foo.execute_operator(operator_uri("evaluate_faseg"), ctx=dict(
        dataset=dataset, params=dict(pred_field="faseg", gt_field="ground_truth", eval_key="later")),
        request_delegation=True)
    try:
        rows = panel.faseg_runs(dataset)
        assert {"run": "evaluate_faseg", "state": "queued"}.items() <= rows[0].items()
        assert any(r["run"] == "field 'faseg'" and r["state"] == "done" and "0.55" in r["detail"] for r in rows)
    finally:
        DelegatedOperationService().delete_for_dataset(dataset_id=dataset._doc.id)


def test_evaluation_form_defaults(dataset):
    dataset.add_sample_field("zoo", fo.EmbeddedDocumentField, embedded_doc_type=fo.Segmentation)
    dataset.add_sample_field("faseg_new", fo.EmbeddedDocumentField, embedded_doc_type=fo.Segmentation)
    RunRecord(threshold=0.4).write(dataset, "faseg_new")
    for sample in dataset:
        sample["zoo"] = sample["faseg"]
        sample["faseg_new"] = sample["faseg"]
        sample.save()
    dataset.evaluate_segmentations("zoo", gt_field="ground_truth", eval_key="zoo_eval")

    selected = dataset.values("id")[:2]
    ctx = ExecutionContext(_parse_ctx(dataset=dataset, params={}, selected=selected))
    form = foo.get_operator(operator_uri("evaluate_faseg")).resolve_input(ctx).type.properties
    assert form["view_target"].default == "DATASET"  # not the selection
    assert form["pred_field"].default == "faseg_new"  # the latest FA-Seg field
    gts = [c.value for c in form["gt_field"].view.choices]
    assert gts == ["ground_truth"]  # a field evaluated as a prediction is not ground truth


def test_panel_events_run_on_a_real_evaluation(dataset, panel):
    """Every event of the panel runs, as the App sends it (with the state it was left in)."""
    state, _ = panel.panel_model(dataset, "ev")
    uri = operator_uri("faseg_panel")
    events = [("on_load", {}), ("on_change_view", {}), ("on_change_sort", {"value": "f1"}), ("on_change_compare", {"value": "ev"}),
              ("on_change_eval", {"value": "ev"}), ("on_class_click", {"x": "cow"}),
              ("on_row_samples", {"row": 0}), ("on_row_missed", {"row": 1}), ("on_row_false_alarm", {"row": 2}),
              ("on_cell_click", {"x": "background", "y": "cat"}), ("on_cell_click", {"x": "cat", "y": "cat"}),
              ("show_worst", {}), ("refresh", {}), ("reevaluate", {})]
    for method, params in events:
        result = foo.execute_operator(uri, ctx=dict(dataset=dataset, params=dict(
            params, __method__=method, panel_id="p1", panel_state=dict(state))))
        result.raise_exceptions()
    # a panel whose state is not built yet (or from an older version) renders, and loads
    foo.execute_operator(uri, ctx=dict(dataset=dataset, params={
        "__method__": "on_change_view", "panel_id": "p1", "panel_state": {"eval_key": "ev"}})).raise_exceptions()


def test_two_evaluations_side_by_side(dataset, panel):
    for sample in dataset:  # a worse prediction, evaluated under another key
        sample["faseg"] = fo.Segmentation(mask=np.roll(sample["faseg"].get_mask(), 3, axis=0))
        sample.save()
    ffe.evaluate_faseg(dataset, "faseg", eval_key="ev2")
    new, old = dataset.load_evaluation_results("ev2"), dataset.load_evaluation_results("ev")

    state, data = panel.panel_model(dataset, "ev2", compare="ev")
    assert state["compare"] == "ev" and state["compare_keys"] == ["none", "ev"]
    (key,) = [k for k in data if k.startswith("iou_")]
    mine, theirs = data[key]
    assert (mine["name"], theirs["name"]) == ("IoU", "IoU: ev") and mine["x"] == theirs["x"]
    assert mine["y"] == [100 * new.class_iou[c] for c in mine["x"]]
    assert theirs["y"] == [100 * old.class_iou[c] for c in theirs["x"]]
    for row in data["table"]:
        c = row["class"]
        assert row["compare"] == "%.1f %%" % (100 * old.class_iou[c])
        assert row["delta"] == "%+.1f" % (100 * (new.class_iou[c] - old.class_iou[c]))
    # a new comparison is a new chart; comparing with itself or an unknown key is no comparison
    assert key not in panel.panel_model(dataset, "ev2")[1]
    assert panel.panel_model(dataset, "ev2", compare="ev2")[0]["compare"] == "none"
    assert panel.panel_model(dataset, "ev2", compare="nope")[0]["compare"] == "none"

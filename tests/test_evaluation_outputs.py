"""What an FA-Seg evaluation writes beside the mIoU, on the real embedded MongoDB: per-class
IoU and confusion pairs per sample, the error overlay, the views built on them, staleness,
re-evaluation, cleanup and rename, candidate recall, the threshold curve, the operator's
form and outputs, and the panel's data.

The known answers are written out by hand for a 4×6 mask (ignored pixels, a class only in
the prediction, an unnamed predicted value).
"""

import numpy as np
import pytest
from PIL import Image

import fiftyone as fo
import fiftyone.core.labels as fol
import fiftyone.operators as foo
from fiftyone.operators.executor import ExecutionContext, _parse_ctx

import fiftyone_faseg.evaluation as ffe
from fiftyone_faseg.run import storage
from fiftyone_faseg.constants import operator_uri
from fiftyone_faseg.fields import ground_truth_fields
from fiftyone_faseg.run.settings import RunRecord

pytestmark = pytest.mark.filterwarnings("ignore:.*samples without a")

GT_TARGETS = {1: "cat", 2: "dog"}
PRED_TARGETS = {1: "cat", 2: "zebra"}  # value 7 has no name: "(unnamed)"
GT = np.array(
    [[0, 0, 1, 1, 255, 255],
     [0, 0, 1, 1, 2, 2],
     [0, 0, 0, 1, 2, 2],
     [0, 0, 0, 0, 2, 2]], dtype=np.uint8)  # fmt: skip
PRED = np.array(
    [[0, 2, 1, 1, 1, 1],
     [0, 0, 1, 0, 1, 2],
     [0, 0, 1, 1, 2, 0],
     [7, 0, 0, 0, 0, 7]], dtype=np.uint8)  # fmt: skip
# 1 correct, 2 wrong class, 3 missed, 4 false alarm; 0: background on both sides, or ignored
ERRORS = np.array(
    [[0, 4, 1, 1, 0, 0],
     [0, 0, 1, 3, 2, 2],
     [0, 0, 4, 1, 2, 3],
     [4, 0, 0, 0, 3, 2]], dtype=np.uint8)  # fmt: skip
# class: (IoU, gt pixels, predicted pixels, tp pixels, in the mean)
CLASSES = {
    "background": (8 / 14, 11, 11, 8, True),
    "cat": (4 / 7, 5, 6, 4, True),
    "dog": (0.0, 6, 0, 0, True),
    "zebra": (0.0, 0, 3, 0, False),
    "(unnamed)": (0.0, 0, 2, 0, False),
}
# (gt, pred): pixels; most first
PAIRS = {
    ("dog", "background"): 2, ("dog", "zebra"): 2, ("background", "cat"): 1, ("background", "zebra"): 1,
    ("background", "(unnamed)"): 1, ("cat", "background"): 1, ("dog", "cat"): 1, ("dog", "(unnamed)"): 1,
}  # fmt: skip
GT_PIXELS = {"background": 11, "cat": 5, "dog": 6}


def _sample(tmp_path, name, gt, pred, **fields):
    path = tmp_path / ("%s.png" % name)
    Image.fromarray(np.zeros(gt.shape + (3,), np.uint8)).save(path)
    return fo.Sample(filepath=str(path), ground_truth=fol.Segmentation(mask=gt),
                     faseg=None if pred is None else fol.Segmentation(mask=pred), **fields)


@pytest.fixture()
def known(tmp_path, request):
    ds = fo.Dataset("faseg-out-" + request.node.name)
    ds.add_sample(_sample(tmp_path, "a", GT, PRED))
    ds.mask_targets = {"ground_truth": GT_TARGETS, "faseg": PRED_TARGETS}
    ds.save()
    yield ds
    ds.delete()


def test_known_answers_per_class_pairs_and_overlay(known):
    before = known.first().ground_truth.to_dict(), known.first().faseg.to_dict()
    results = ffe.evaluate_faseg(known, "faseg", eval_key="ev")
    sample = known.first()

    assert sample.ev_miou == pytest.approx(100 * (8 / 14 + 4 / 7 + 0) / 3)  # in percent
    stored = {c.label: (c.confidence, c.gt_pixels, c.pred_pixels, c.tp_pixels, c.in_mean)
              for c in sample.ev_classes.classifications}
    assert stored == {k: (pytest.approx(v[0]),) + v[1:] for k, v in CLASSES.items()}

    pairs = [(c.gt, c.pred, c.pixels, c.share) for c in sample.ev_confusions]
    assert {(g, p): n for g, p, n, _ in pairs} == PAIRS
    assert [n for _, _, n, _ in pairs] == sorted(PAIRS.values(), reverse=True)
    for g, p, n, share in pairs:
        assert share == pytest.approx(n / GT_PIXELS[g])

    np.testing.assert_array_equal(sample.ev_errors.get_mask(), ERRORS)
    assert (sample.ev_errors.correct, sample.ev_errors.wrong_class, sample.ev_errors.missed,
            sample.ev_errors.false_alarm) == (4, 4, 3, 3)
    assert known.mask_targets["ev_errors"] == {1: "correct", 2: "wrong class", 3: "missed", 4: "false alarm"}

    # the dataset matrix agrees, and nothing was written into the ground truth or the prediction
    assert 100 * results.miou == pytest.approx(sample.ev_miou)
    assert (sample.ground_truth.to_dict(), sample.faseg.to_dict()) == before
    assert known.mask_targets["ground_truth"] == GT_TARGETS and known.mask_targets["faseg"] == PRED_TARGETS

    # the attributes are declared: the App's sidebar filters them
    for path in ("ev_classes.classifications.gt_pixels", "ev_confusions.pixels",
                 "ev_errors.missed"):
        assert known.get_field(path) is not None, path
    assert known.count_values("ev_classes.classifications.label")["cat"] == 1


def test_per_sample_miou_is_keyed_by_sample_not_by_gt_label(tmp_path):
    # issue 10, case 9: two samples sharing one ground truth label (same label id)
    ds = fo.Dataset()
    try:
        gt = fol.Segmentation(mask=GT)
        ds.add_samples([_sample(tmp_path, "a", GT, GT), _sample(tmp_path, "b", GT, np.zeros_like(GT))])
        ds.set_values("ground_truth", [gt, gt])
        ids = ds.values("ground_truth.id")
        assert ids[0] == ids[1]
        ds.mask_targets = {"ground_truth": GT_TARGETS, "faseg": GT_TARGETS}
        ds.save()
        ffe.evaluate_faseg(ds, "faseg", eval_key="ev")
        perfect, empty = ds.values("ev_miou")
        assert perfect == pytest.approx(100.0)
        assert empty == pytest.approx(100 * (11 / 22 + 0 + 0) / 3)  # all 22 counted pixels predicted background
    finally:
        ds.delete()


def test_fields_are_marked_renamed_and_deleted_with_the_evaluation(known):
    ffe.evaluate_faseg(known, "faseg", eval_key="ev")
    names = ["ev_%s" % r for r in ("accuracy", "precision", "recall", "miou", "classes", "confusions", "errors")]
    for name in names:
        assert known.get_field(name).info["faseg_eval"] == {"eval_key": "ev"}, name
    assert "ev_errors" not in ground_truth_fields(known)
    assert "ev_miou" in known.list_indexes()  # sortable in the App's grid
    assert known.list_saved_views() == ["ev_worst"]

    known.rename_evaluation("ev", "ev2")
    for name in names:
        new = name.replace("ev_", "ev2_")
        assert not known.has_sample_field(name) and known.get_field(new).info["faseg_eval"] == {"eval_key": "ev2"}
    assert "ev_errors" not in known.mask_targets and known.mask_targets["ev2_errors"][3] == "missed"
    assert "ev2_miou" in known.list_indexes() and "ev_miou" not in known.list_indexes()
    assert known.list_saved_views() == ["ev2_worst"] and len(known.load_saved_view("ev2_worst")) == 1

    known.delete_evaluation("ev2")
    assert not any(f.startswith("ev") for f in known.get_field_schema())
    assert set(known.mask_targets) == {"ground_truth", "faseg"}
    assert known.list_saved_views() == [] and not any(i.startswith("ev") for i in known.list_indexes())


def test_outputs_can_be_turned_off_and_foreign_fields_are_refused(known):
    ffe.evaluate_faseg(known, "faseg", eval_key="lean", per_class=False, error_masks=False)
    assert known.has_sample_field("lean_miou") and not known.has_sample_field("lean_classes")
    assert "lean_errors" not in known.mask_targets
    with pytest.raises(ValueError, match="per_class=False"):
        ffe.class_view(known, "lean", "cat")

    known.add_sample_field("mine_errors", fo.FloatField)
    with pytest.raises(ValueError, match="field 'mine_errors' exists and does not belong to evaluation 'mine'"):
        ffe.evaluate_faseg(known, "faseg", eval_key="mine")
    assert "mine" not in known.list_evaluations() and not known.has_sample_field("mine_miou")
    # the form says so before Execute
    ctx = ExecutionContext(_parse_ctx(dataset=known, params=dict(pred_field="faseg", gt_field="ground_truth",
                                                                  eval_key="mine")))
    prop = foo.get_operator(operator_uri("evaluate_faseg")).resolve_input(ctx).type.properties["eval_key"]
    assert prop.invalid and "mine_errors" in prop.error_message
    with pytest.raises(ValueError, match="valid Python identifier"):
        ffe.evaluate_faseg(known, "faseg", eval_key="a.b")


def test_class_and_confusion_views_come_from_stored_values(tmp_path):
    rng = np.random.default_rng(1)
    ds = fo.Dataset()
    try:
        samples = []
        for k in range(6):
            pred = GT.copy()
            flip = rng.random(GT.shape) < 0.15 * k
            pred[flip] = rng.integers(0, 3, size=int(flip.sum()))
            pred[GT == 255] = 0
            samples.append(_sample(tmp_path, str(k), GT, pred))
        ds.add_samples(samples)
        ds.mask_targets = {"ground_truth": GT_TARGETS, "faseg": {1: "cat", 2: "dog"}}
        ds.save()
        ffe.evaluate_faseg(ds, "faseg", eval_key="ev")

        expected = {}
        for sample in ds:
            gt, pred = sample.ground_truth.get_mask(), sample.faseg.get_mask()
            valid = gt != 255
            tp = ((gt == 1) & (pred == 1) & valid).sum()
            union = (((gt == 1) | (pred == 1)) & valid).sum()
            if union:
                expected[sample.id] = tp / union
        view = ffe.class_view(ds, "ev", "cat")
        assert view.values("id") == sorted(expected, key=expected.get)
        np.testing.assert_allclose([c[0] for c in view.values("ev_classes.classifications.confidence")],
                                   sorted(expected.values()))

        pixels = {s.id: int(((s.ground_truth.get_mask() == 2) & (s.faseg.get_mask() == 1)).sum()) for s in ds}
        view = ffe.confusion_view(ds, "ev", "dog", "cat")
        assert [pixels[i] for i in view.values("id")] == sorted([p for p in pixels.values() if p], reverse=True)
        assert all(len(c) == 1 for c in view.values("ev_confusions"))  # only that pair in the view

        with pytest.raises(ValueError, match=r"classes \['horse'\] are not in evaluation 'ev'"):
            ffe.class_view(ds, "ev", "horse")
        with pytest.raises(ValueError, match="no evaluation 'nope'"):
            ffe.confusion_view(ds, "nope", "dog", "cat")
    finally:
        ds.delete()


def test_stale_after_the_prediction_changes_and_one_call_reevaluates(known):
    RunRecord(threshold=0.5).write(known, "faseg")
    ffe.evaluate_faseg(known, "faseg", eval_key="ev")
    assert ffe.is_stale(known, "ev") is False
    assert known.get_evaluation_info("ev").config.pred_revision == RunRecord.read(known, "faseg").revision

    RunRecord.read(known, "faseg").new_revision().write(known, "faseg")  # a rerun / re-threshold wrote it
    assert ffe.is_stale(known, "ev") is True
    assert ffe.evaluation_summary(known, "ev")["stale"] is True

    # the operator's form says so, and re-evaluating is one call
    ctx = ExecutionContext(_parse_ctx(dataset=known, params=dict(pred_field="faseg", gt_field="ground_truth",
                                                                  eval_key="ev")))
    form = foo.get_operator(operator_uri("evaluate_faseg")).resolve_input(ctx)
    assert "stale" in form.type.properties
    result = foo.execute_operator(operator_uri("evaluate_faseg"), ctx=dict(dataset=known, params={"reevaluate": "ev"}))
    assert result.result["eval_key"] == "ev"
    assert ffe.is_stale(known, "ev") is False

    known.delete_sample_field("faseg")
    assert ffe.is_stale(known, "ev") is True


def test_reevaluation_keeps_view_settings_and_synonyms(tmp_path):
    class Vocabulary:
        def canonical(self, name):
            return {"kitty": "cat"}.get(name.strip().lower())

    ds = fo.Dataset()
    try:
        ds.add_samples([_sample(tmp_path, "a", GT, PRED), _sample(tmp_path, "b", GT, GT)])
        ds.mask_targets = {"ground_truth": GT_TARGETS, "faseg": {1: "Kitty", 2: "dog"}}
        ds.save()
        first = ffe.evaluate_faseg(ds.limit(1), "faseg", eval_key="ev", vocabulary=Vocabulary(), error_masks=False)
        again = ffe.reevaluate_faseg(ds, "ev")
        np.testing.assert_array_equal(again.confusion, first.confusion)
        assert list(again.classes) == list(first.classes) == ["background", "cat", "dog", "(unnamed)"]
        assert ds.count("ev_miou") == 1 and not ds.has_sample_field("ev_errors")
    finally:
        ds.delete()


def test_candidate_recall(tmp_path):
    def cands(*names):
        return fol.Classifications(classifications=[fol.Classification(label=n) for n in names])

    ds = fo.Dataset()
    try:
        ds.add_samples([
            _sample(tmp_path, "a", GT, PRED, faseg_candidates=cands("cat")),  # dog missing
            _sample(tmp_path, "b", GT, PRED, faseg_candidates=cands(" CAT ", "dog")),  # both
            _sample(tmp_path, "c", GT, PRED, faseg_candidates=cands("zebra")),  # neither
            _sample(tmp_path, "d", GT, PRED),  # no candidates: not counted
        ])
        ds.mask_targets = {"ground_truth": GT_TARGETS, "faseg": PRED_TARGETS}
        ds.save()
        results = ffe.evaluate_faseg(ds, "faseg", eval_key="ev")
        assert results.summary["candidate_recall"] == {"cat": {"samples": 3, "proposed": 2},
                                                       "dog": {"samples": 3, "proposed": 1}}
        summary = ffe.evaluation_summary(ds, "ev")
        assert [(r["class"], r["recall"]) for r in summary["candidate_recall"]] == [
            ("dog", pytest.approx(1 / 3)), ("cat", pytest.approx(2 / 3))]
    finally:
        ds.delete()


def test_threshold_curve_from_stored_scores(tmp_path):
    from fiftyone_faseg.analysis import iterate

    rng = np.random.default_rng(0)
    ds = fo.Dataset()
    try:
        ds.add_samples([_sample(tmp_path, str(k), GT, np.zeros_like(GT)) for k in range(3)])
        ds.mask_targets = {"ground_truth": GT_TARGETS, "faseg": {1: "cat", 2: "dog"}}
        ds.save()
        paths = {}
        for sample_id in ds.values("id"):
            scores = rng.random((2, 4, 4)).astype(np.float32)
            paths[sample_id] = storage.save_scores(str(tmp_path / (sample_id + ".npz")), scores, ["cat", "dog"])
        ds.set_values("faseg_scores", paths, key_field="id")
        RunRecord(threshold=0.55, image_size=32, store_scores=True).write(ds, "faseg")
        iterate.rethreshold(ds, "faseg", 0.55)  # the masks are what the stored scores give at 0.55

        results = ffe.evaluate_faseg(ds, "faseg", eval_key="ev")
        curve = results.summary["threshold_curve"]
        assert curve["threshold"] == 0.55 and curve["scores_field"] == "faseg"
        assert 0.55 in curve["thresholds"] and 0.05 in curve["thresholds"] and 0.95 in curve["thresholds"]
        at_run = curve["miou"][curve["thresholds"].index(0.55)]
        assert at_run == pytest.approx(results.miou, abs=1e-12)
        expected = iterate.sweep(ds, "faseg", "ground_truth", [0.3, 0.8])
        for t in (0.3, 0.8):
            assert curve["miou"][curve["thresholds"].index(t)] == pytest.approx(expected[t])
        assert ffe.preview_miou(curve, 0.31) == (0.3, pytest.approx(expected[0.3]))

        # stored with the run: the panel reads it back without touching a score file
        assert ds.load_evaluation_results("ev").summary["threshold_curve"] == curve
    finally:
        ds.delete()


def test_no_curve_says_why(known):
    results = ffe.evaluate_faseg(known, "faseg", eval_key="ev")
    assert results.summary["threshold_curve"] is None
    assert "was not made by an FA-Seg run" in results.summary["curve_note"]
    RunRecord(threshold=0.5).write(known, "faseg")
    results = ffe.evaluate_faseg(known, "faseg", eval_key="ev")
    assert "has no stored scores" in results.summary["curve_note"]


def test_accuracy_precision_recall_equal_fiftyones():
    import fiftyone.utils.eval.segmentation as fous

    rng = np.random.default_rng(0)
    for _ in range(20):
        conf = rng.integers(0, 50, size=(5, 5)) * (rng.random((5, 5)) < 0.6)
        ours = ffe.accuracy_precision_recall(conf)
        theirs = fous._compute_accuracy_precision_recall(conf, list(range(5)), "micro")
        assert ours == pytest.approx(theirs)
    conf = np.zeros((3, 3), int)
    conf[0, 0] = 5
    assert ffe.accuracy_precision_recall(conf) == (None, None, None)


def test_sdk_needs_no_plugin(known, tmp_path, monkeypatch):
    # FiftyOne finds no plugin at all: the SDK still stores the mIoU metric and cleans up
    monkeypatch.setattr(fo.config, "plugins_dir", str(tmp_path / "no-plugins"))
    with pytest.raises(ValueError, match="not found"):
        foo.get_operator(ffe.MIOU_METRIC_URI)
    results = ffe.evaluate_faseg(known, "faseg", eval_key="alone")
    stored = known.load_evaluation_results("alone").custom_metrics[ffe.MIOU_METRIC_URI]
    assert stored == {"key": "miou", "value": pytest.approx(100 * results.miou), "label": "mIoU (%)",
                      "lower_is_better": False}
    known.delete_evaluation("alone")
    assert not any(f.startswith("alone") for f in known.get_field_schema())


def test_miou_metric_operator_on_fiftyones_own_method(known):
    # the metric stays usable as a thin wrapper: FiftyOne's "simple" method compares raw values
    known.mask_targets["faseg"] = GT_TARGETS
    known.save()
    targets = {0: "background", 1: "cat", 2: "dog"}
    results = known.evaluate_segmentations("faseg", gt_field="ground_truth", eval_key="simple",
                                           mask_targets=targets, custom_metrics=[ffe.MIOU_METRIC_URI])
    conf = results.pixel_confusion_matrix
    ious = [conf[c, c] / (conf[c].sum() + conf[:, c].sum() - conf[c, c]) for c in range(3)
            if conf[c].sum() + conf[:, c].sum()]
    assert results.metrics()["miou"] == pytest.approx(100 * np.mean(ious))  # in percent
    assert not known.has_sample_field("simple_miou")


def test_operator_form_and_outputs(tmp_path):
    ds = fo.Dataset()
    try:
        ds.add_samples([_sample(tmp_path, "a", GT, PRED), _sample(tmp_path, "b", GT, None)])
        ds.add_sample_field("annotations", fo.EmbeddedDocumentField, embedded_doc_type=fol.Segmentation)
        ds.mask_targets = {"ground_truth": GT_TARGETS, "faseg": PRED_TARGETS}
        ds.save()
        RunRecord(threshold=0.5).write(ds, "faseg")
        ffe.evaluate_faseg(ds, "faseg", eval_key="old")
        op = foo.get_operator(operator_uri("evaluate_faseg"))
        assert op.config.allow_immediate_execution and not op.config.default_choice_to_delegated

        form = op.resolve_input(ExecutionContext(_parse_ctx(dataset=ds, params={}))).type.properties
        preds = [c.value for c in form["pred_field"].view.choices]
        gts = [c.value for c in form["gt_field"].view.choices]
        assert preds[0] == "faseg" and "old_errors" not in preds
        assert gts == ["ground_truth", "annotations"]  # never FA-Seg's fields, likeliest first
        assert form["gt_field"].default == "ground_truth"

        result = foo.execute_operator(operator_uri("evaluate_faseg"), ctx=dict(
            dataset=ds, params=dict(pred_field="faseg", gt_field="ground_truth", eval_key="ev")))
        out = result.result
        assert out["miou"] == "%.1f %%" % (100 * ds.load_evaluation_results("ev").miou)
        assert out["samples"] == "1 of 2"
        assert out["warning"] == ("1 of 2 samples were left out of the mIoU: 1 had no 'faseg' mask "
                                  "(failed or not segmented). The mIoU is over 1 samples.")
        outputs = op.resolve_output(ExecutionContext(dict(_parse_ctx(dataset=ds), results=out)))
        assert outputs.type.properties["warning_notice"].view.description == out["warning"]
    finally:
        ds.delete()


def test_panel_loads_and_renders(known):
    ffe.evaluate_faseg(known, "faseg", eval_key="ev")
    uri = operator_uri("faseg_panel")
    for method in ("on_load", "on_threshold", "show_worst"):
        result = foo.execute_operator(uri, ctx=dict(dataset=known, params={
            "__method__": method, "panel_id": "p1", "panel_state": {"eval_key": "ev"}, "value": 0.5}))
        result.raise_exceptions()
    summary = ffe.evaluation_summary(known, "ev")
    assert [r["class"] for r in summary["classes"]] == ["dog", "background", "cat"]  # worst first
    assert summary["confusions"][0] == {"gt": "dog", "pred": "background", "pixels": 2}
    assert summary["counts"] == {"evaluated": 1, "no_prediction": 0, "no_ground_truth": 0, "unreadable": 0}
    assert ffe.list_faseg_evaluations(known) == ["ev"]


def _outputs_of(ds, key):
    return {n: ds.values(n) for n in ds.get_field_schema() if n.startswith(key + "_")}


def test_a_failed_rerun_leaves_the_stored_evaluation_as_it_was(tmp_path, monkeypatch):
    import fiftyone_faseg.evaluation.method as method

    ds = fo.Dataset()
    try:
        ds.add_samples([_sample(tmp_path, "a", GT, PRED), _sample(tmp_path, "b", GT, GT), _sample(tmp_path, "c", GT, PRED)])
        ds.mask_targets = {"ground_truth": GT_TARGETS, "faseg": PRED_TARGETS}
        ds.save()
        first = ffe.evaluate_faseg(ds, "faseg", eval_key="ev")
        stored = _outputs_of(ds, "ev")
        assert {"ev_miou", "ev_classes", "ev_errors"} <= set(stored)

        # the prediction changes, and the re-run dies on the second sample (an interruption)
        ds.set_values("faseg", [fol.Segmentation(mask=GT)] * 3)
        real, calls = method._sample_values, []

        def dies(*args):
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
            return real(*args)

        monkeypatch.setattr(method, "_sample_values", dies)
        with pytest.raises(KeyboardInterrupt):
            ffe.reevaluate_faseg(ds, "ev")
        ds.reload()
        assert ds.list_evaluations() == ["ev"] and ds.has_saved_view("ev_worst")
        np.testing.assert_array_equal(ds.load_evaluation_results("ev").confusion, first.confusion)
        assert _outputs_of(ds, "ev") == stored  # every per-sample output as the first run wrote it
        assert not [n for n in ds.get_field_schema() if n.startswith("ev__next")]
        assert "ev__next_errors" not in ds.mask_targets

        # a run that completes replaces it whole
        monkeypatch.setattr(method, "_sample_values", real)
        again = ffe.reevaluate_faseg(ds, "ev")
        # (the prediction's value 2 is "zebra": dog is missed, background and cat are exact)
        assert again.miou == pytest.approx(2 / 3) and ds.values("ev_miou") == pytest.approx([200 / 3] * 3)
        assert ds.get_field("ev_miou").info["faseg_eval"] == {"eval_key": "ev"}
        assert "ev_errors" in ds.mask_targets and not [n for n in ds.get_field_schema() if "__next" in n]
        assert ds.has_saved_view("ev_worst") and "ev_miou" in ds.list_indexes()
    finally:
        ds.delete()


def test_outputs_left_by_a_killed_rerun_are_taken_over_by_the_next(known):
    ffe.evaluate_faseg(known, "faseg", eval_key="ev")
    # what a re-run killed before its end leaves: fields of the working key, marked as its own
    known.add_sample_field("ev__next_miou", fo.FloatField, info={"faseg_eval": {"eval_key": "ev__next"}})
    known.set_values("ev__next_miou", [1.0])
    ffe.reevaluate_faseg(known, "ev")
    assert not known.has_sample_field("ev__next_miou") and known.count("ev_miou") == 1
    # but a user's own field of that name is never written into
    known.add_sample_field("ev__next_recall", fo.FloatField)
    with pytest.raises(ValueError, match="ev__next_recall"):
        ffe.reevaluate_faseg(known, "ev")
    assert known.values("ev__next_recall") == [None] and known.list_evaluations() == ["ev"]


def test_apply_uses_the_threshold_the_preview_shows(known):
    # the panel's slider writes its raw position (0.797) into the state the preview snaps to
    # the curve (0.80, what the panel shows): Apply re-thresholds at what was shown
    from fiftyone.operators.executor import ExecutionContext, Executor

    panel = foo.get_operator(operator_uri("faseg_panel"))
    thresholds = [round(0.05 * i, 2) for i in range(1, 20)]
    curve = {"thresholds": thresholds, "miou": [0.5] * 19, "threshold": 0.55, "scores_field": "faseg_scores"}
    for raw, shown in ((0.797, 0.8), (0.8, 0.8), (0.05, 0.05), (0.93, 0.95)):
        executor = Executor()
        state = {"curve": curve, "threshold": raw}
        ctx = ExecutionContext(request_params=dict(dataset_name=known.name, panel_id="p1",
                                                   params={"panel_id": "p1", "panel_state": state}), executor=executor)
        panel.apply_threshold(ctx)
        (request,) = executor._requests
        assert request.params["params"]["threshold"] == shown, raw

"""Issue 19 and 21, evaluation side: FiftyOne's Model Evaluation panel opens a class's and a
confusion cell's samples from FA-Seg results (stored without growing with N), the per-class
table, "missed" and "false alarm" views, the config built through FiftyOne's own
``evaluate_segmentations(method=...)``, and no process-wide GC switch.
"""

import gc

import numpy as np
import pytest
from bson import ObjectId

import fiftyone as fo
from fiftyone import ViewField as F

import fiftyone_faseg.evaluation as ffe

from test_evaluation_outputs import CLASSES, GT, GT_TARGETS, PRED, PRED_TARGETS, _sample

pytestmark = pytest.mark.filterwarnings("ignore:.*samples without a")


def _pred(rng, k):
    pred = GT.copy()
    flip = rng.random(GT.shape) < 0.2 * k
    pred[flip] = rng.integers(0, 3, size=int(flip.sum()))
    pred[GT == 255] = 0
    return pred


@pytest.fixture()
def ds(tmp_path):
    rng = np.random.default_rng(3)
    dataset = fo.Dataset()
    dataset.add_samples([_sample(tmp_path, str(k), GT, _pred(rng, k)) for k in range(5)])
    dataset.mask_targets = {"ground_truth": GT_TARGETS, "faseg": {1: "cat", 2: "dog"}}
    dataset.save()
    yield dataset
    dataset.delete()


def _masks(ds):
    return {s.id: (s.ground_truth.get_mask(), s.faseg.get_mask()) for s in ds}


def test_model_evaluation_panel_opens_a_class_and_a_cell(ds):
    import plugins.panels.model_evaluation as me

    ffe.evaluate_faseg(ds, "faseg", eval_key="ev", threshold_curve=False)
    results = ds.load_evaluation_results("ev", cache=False)
    me._init_segmentation_results(ds, results, "ground_truth")  # what the panel does on load and click
    assert results.ytrue_ids is not None

    masks = _masks(ds)
    values = {"background": 0, "cat": 1, "dog": 2}

    def open_ids(ytrue_ids, ypred_ids, both):
        expr = F("ground_truth._id").is_in(ytrue_ids)
        other = F("faseg._id").is_in(ypred_ids)
        return set(ds.match(expr & other if both else expr | other).values("id"))

    # a class: the samples where it is in the ground truth or the prediction
    ytrue_ids, ypred_ids = me._get_segmentation_class_ids(results, "cat")
    expected = {i for i, (g, p) in masks.items() if ((g == 1) & (g != 255)).any() or ((p == 1) & (g != 255)).any()}
    assert open_ids(ytrue_ids, ypred_ids, both=False) == expected

    # a cell (x: predicted, y: ground truth): the samples with such pixels
    ytrue_ids, ypred_ids = me._get_segmentation_conf_mat_ids(results, "cat", "dog")
    expected = {i for i, (g, p) in masks.items() if ((g == values["dog"]) & (p == values["cat"])).any()}
    assert expected and open_ids(ytrue_ids, ypred_ids, both=True) == expected

    # the matches add up to the stored matrix; what is stored does not hold them
    matrix, _, _ = results._confusion_matrix(include_other=False, include_missing=False)
    np.testing.assert_array_equal(matrix, results.confusion)
    # the panel's metrics and report read the same numbers as the matrix gives
    lean = ffe.evaluate_faseg(ds, "faseg", eval_key="lean", per_class=False, error_masks=False, threshold_curve=False)
    assert lean.ytrue_ids is None  # no per-sample fields: FiftyOne's "legacy" results, no click-through
    assert results.metrics() == pytest.approx(lean.metrics(), abs=1e-12)
    assert results.report() == lean.report()
    stored = results.serialize()
    assert not {"ytrue", "ypred", "weights", "ytrue_ids", "ypred_ids"} & set(stored)
    assert all(isinstance(i, ObjectId) for i in me._to_object_ids(results.ytrue_ids[:3]))


def test_class_table_by_hand(tmp_path):
    ds = fo.Dataset()
    try:
        ds.add_samples([_sample(tmp_path, "a", GT, PRED), _sample(tmp_path, "b", GT, np.zeros_like(PRED))])
        ds.mask_targets = {"ground_truth": GT_TARGETS, "faseg": PRED_TARGETS}
        ds.save()
        results = ffe.evaluate_faseg(ds.limit(1), "faseg", eval_key="ev", threshold_curve=False)
        rows = {r["class"]: r for r in results.class_table()}
        assert list(rows) == list(results.classes)
        for name, (iou, gt, pred, tp, in_mean) in CLASSES.items():
            r = rows[name]
            assert (r["gt_pixels"], r["pred_pixels"], r["tp_pixels"], r["in_mean"]) == (gt, pred, tp, in_mean)
            assert r["iou"] == pytest.approx(iou, abs=1e-12)
            assert r["precision"] == (pytest.approx(tp / pred, abs=1e-12) if pred else None)
            assert r["recall"] == (pytest.approx(tp / gt, abs=1e-12) if gt else None)
            assert r["f1"] == pytest.approx(2 * tp / (gt + pred), abs=1e-12)
            assert (r["samples"], r["gt_samples"], r["pred_samples"]) == (1, int(gt > 0), int(pred > 0))
        assert ffe.evaluation_summary(ds, "ev")["class_table"] == results.class_table()

        both = ffe.evaluate_faseg(ds, "faseg", eval_key="ev", threshold_curve=False).class_table()
        cat = next(r for r in both if r["class"] == "cat")
        assert (cat["samples"], cat["gt_samples"], cat["pred_samples"]) == (2, 2, 1)
    finally:
        ds.delete()


def test_missed_and_false_alarm_views(ds):
    ffe.evaluate_faseg(ds, "faseg", eval_key="ev", threshold_curve=False)
    masks = _masks(ds)
    valid = {i: g != 255 for i, (g, _) in masks.items()}
    missed = {i: int(((g == 1) & (p != 1) & valid[i]).sum()) for i, (g, p) in masks.items()}
    false = {i: int(((p == 1) & (g != 1) & valid[i]).sum()) for i, (g, p) in masks.items()}

    view = ffe.missed_view(ds, "ev", "cat")
    assert [missed[i] for i in view.values("id")] == sorted([n for n in missed.values() if n], reverse=True)
    assert all(c["gt"] == "cat" for pairs in view.values("ev_confusions") for c in pairs)

    view = ffe.false_alarm_view(ds, "ev", "cat")
    assert [false[i] for i in view.values("id")] == sorted([n for n in false.values() if n], reverse=True)
    assert all(c["pred"] == "cat" for pairs in view.values("ev_confusions") for c in pairs)

    with pytest.raises(ValueError, match=r"classes \['cow'\] are not in evaluation 'ev'"):
        ffe.missed_view(ds, "ev", "cow")


def test_fiftyones_own_api_builds_the_config_and_matches_classes(ds):
    # no class mappings given: they are matched while evaluating
    results = ds.evaluate_segmentations("faseg", gt_field="ground_truth", eval_key="own",
                                        method=ffe.FASegEvaluationConfig)
    reference = ffe.evaluate_faseg(ds, "faseg", eval_key=None, threshold_curve=False)
    assert results.miou == pytest.approx(reference.miou, abs=1e-12)
    np.testing.assert_array_equal(results.confusion, reference.confusion)
    assert ffe.list_faseg_evaluations(ds) == ["own"] and ds.count("own_miou") == len(ds)
    config = ds.get_evaluation_info("own").config
    assert not hasattr(config, "gt_values") and config.outputs["miou"] == "own_miou"


def test_no_process_wide_gc_switch(ds):
    seen = []
    ffe.evaluate_faseg(ds, "faseg", eval_key="ev", threshold_curve=False,
                       progress=lambda pb: seen.append(gc.isenabled()))
    assert seen and all(seen)

"""Issue 18 cases 21-22 and issue 19's ground truth formats: palette PNGs are read as their
indices, RGB masks with hex mask_targets evaluate like the index masks, a mask that cannot
be read is handled per sample or refused before anything changes, and a failed evaluation
leaves no registered key (nor crashes the panels or a re-evaluation on one left by older
versions).
"""

import numpy as np
import pytest
from PIL import Image

import fiftyone as fo
import fiftyone.core.labels as fol
import fiftyone.operators as foo
import fiftyone.utils.eval.segmentation as fous

import fiftyone_faseg.evaluation as ffe
from fiftyone_faseg.constants import operator_uri

from test_evaluation_outputs import GT, GT_TARGETS, PRED, PRED_TARGETS
from test_panel_forms import _form

pytestmark = pytest.mark.filterwarnings("ignore:.*samples without a", "ignore:.*not in its mask_targets")

# VOC's colours of values 0, 1, 2 and of its void value 255
PALETTE = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 255: (224, 224, 192)}


def _voc_palette():
    palette = np.zeros((256, 3), np.uint8)
    for value, rgb in PALETTE.items():
        palette[value] = rgb
    return palette.ravel().tolist()


def _palette_png(path, mask):
    img = Image.fromarray(mask, mode="P")
    img.putpalette(_voc_palette())
    img.save(path)
    return str(path)


def _rgb(mask):
    out = np.zeros(mask.shape + (3,), np.uint8)
    for value, rgb in PALETTE.items():
        out[mask == value] = rgb
    return out


def _dataset(tmp_path, gts, preds=None, gt_targets=GT_TARGETS):
    """One sample per ground truth (a Segmentation), predictions PRED unless given."""
    ds = fo.Dataset()
    samples = []
    for k, gt in enumerate(gts):
        path = tmp_path / ("%d.png" % k)
        Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(path)
        pred = PRED if preds is None else preds[k]
        samples.append(fo.Sample(filepath=str(path), ground_truth=gt, faseg=fol.Segmentation(mask=pred)))
    ds.add_samples(samples)
    ds.mask_targets = {"ground_truth": gt_targets, "faseg": PRED_TARGETS}
    ds.save()
    return ds


@pytest.fixture()
def reference(tmp_path):
    """The mIoU and matrix of index masks stored in the database."""
    ds = _dataset(tmp_path, [fol.Segmentation(mask=GT), fol.Segmentation(mask=GT.T.copy()[:4, :4])],
                  preds=[PRED, PRED[:4, :4]])
    results = ffe.evaluate_faseg(ds, "faseg", eval_key=None, threshold_curve=False)
    yield results.miou, results.confusion, results.class_iou
    ds.delete()


def test_palette_png_ground_truth_is_read_as_indices(tmp_path, reference):
    masks = [_palette_png(tmp_path / "gt0.png", GT), _palette_png(tmp_path / "gt1.png", GT.T.copy()[:4, :4])]
    assert Image.open(masks[0]).mode == "P"
    ds = _dataset(tmp_path, [fol.Segmentation(mask_path=m) for m in masks], preds=[PRED, PRED[:4, :4]])
    try:
        results = ffe.evaluate_faseg(ds, "faseg", eval_key="ev", threshold_curve=False)
        assert results.miou == pytest.approx(reference[0], abs=1e-12)
        np.testing.assert_array_equal(results.confusion, reference[1])
    finally:
        ds.delete()


@pytest.mark.parametrize("stored", ["mask", "mask_path", "palette with hex targets"])
def test_rgb_ground_truth_with_hex_targets_equals_the_index_ground_truth(tmp_path, reference, stored):
    hex_targets = {"#%02x%02x%02x" % PALETTE[v]: name for v, name in GT_TARGETS.items()}
    hex_targets["#000000"] = "background"
    gts = []
    for k, gt in enumerate([GT, GT.T.copy()[:4, :4]]):
        if stored == "mask":
            gts.append(fol.Segmentation(mask=_rgb(gt)))
        elif stored == "mask_path":
            path = tmp_path / ("rgb%d.png" % k)
            Image.fromarray(_rgb(gt)).save(path)
            gts.append(fol.Segmentation(mask_path=str(path)))
        else:  # a palette PNG whose field has hex targets: read as its colours
            gts.append(fol.Segmentation(mask_path=_palette_png(tmp_path / ("p%d.png" % k), gt)))
    ds = _dataset(tmp_path, gts, preds=[PRED, PRED[:4, :4]], gt_targets=hex_targets)
    try:
        with pytest.warns(UserWarning, match=r"\['#e0e0c0'\] of 'ground_truth' are not in its mask_targets"):
            results = ffe.evaluate_faseg(ds, "faseg", eval_key="ev", threshold_curve=False)
        assert results.miou == pytest.approx(reference[0], abs=1e-12)
        # hex values order the classes by colour (dog #008000 before cat #800000): same IoUs
        assert sorted(results.classes[:3]) == ["background", "cat", "dog"]
        assert results.class_iou == pytest.approx(reference[2], abs=1e-12)
        assert results.confusion.sum() == reference[1].sum()
    finally:
        ds.delete()


def test_case22_an_rgb_mask_without_hex_targets_names_the_conversion_before_any_change(tmp_path):
    ds = _dataset(tmp_path, [fol.Segmentation(mask=_rgb(GT)), fol.Segmentation(mask=GT)])
    try:
        # the form says it before Execute, with the same words
        props = _form("evaluate_faseg", ds, {"pred_field": "faseg", "gt_field": "ground_truth"})
        assert props["mask_format"].invalid
        assert "hex mask_targets" in props["mask_format"].view.description
        with pytest.raises(ValueError, match=r"is an RGB image \(4, 6, 3\).*hex mask_targets.*convert the masks"):
            ffe.evaluate_faseg(ds, "faseg", eval_key="ev")
        assert "ev" not in ds.list_evaluations()
        assert not any(n.startswith("ev_") for n in ds.get_field_schema()) and ds.list_saved_views() == []
    finally:
        ds.delete()


def test_case21_boolean_and_missing_masks_are_handled_per_sample(tmp_path, reference):
    gt_bool = GT == 1  # a binary mask: True is value 1 (cat)
    gts = [fol.Segmentation(mask=GT), fol.Segmentation(mask=gt_bool),
           fol.Segmentation(mask_path=str(tmp_path / "gone.png"))]
    ds = _dataset(tmp_path, gts, preds=[PRED, PRED, PRED])
    try:
        with pytest.warns(UserWarning, match=r"1 samples whose masks cannot be read.*gone\.png"):
            results = ffe.evaluate_faseg(ds, "faseg", eval_key="ev", threshold_curve=False)
        assert ffe.list_faseg_evaluations(ds) == ["ev"]
        assert results.summary["evaluated"] == 2 and results.summary["unreadable"] == 1
        expected = ffe.evaluate_faseg(ds.limit(1), "faseg", eval_key=None, threshold_curve=False).confusion
        expected = expected + ffe.evaluate_faseg(
            _dataset(tmp_path, [fol.Segmentation(mask=gt_bool.astype(np.uint8))]), "faseg", eval_key=None,
            threshold_curve=False).confusion
        np.testing.assert_array_equal(results.confusion, expected)
    finally:
        ds.delete()


def _run_panel(ds, method, state):
    result = foo.execute_operator(operator_uri("faseg_panel"), ctx=dict(dataset=ds, params={
        "__method__": method, "panel_id": "p1", "panel_state": state}))
    result.raise_exceptions()
    return result


def test_case21_a_failed_evaluation_leaves_no_key_and_replaces_nothing_before_its_checks(tmp_path):
    ds = _dataset(tmp_path, [fol.Segmentation(mask=GT), fol.Segmentation(mask=GT)])
    try:
        ffe.evaluate_faseg(ds, "faseg", eval_key="ev", threshold_curve=False)
        stamp = ds.get_evaluation_info("ev").timestamp
        # a format refused up front: the existing evaluation is untouched
        for sample in ds:
            sample.ground_truth = fol.Segmentation(mask=np.zeros((4, 6), np.float32))
            sample.save()
        with pytest.raises(ValueError, match="dtype float32"):
            ffe.evaluate_faseg(ds, "faseg", eval_key="ev", threshold_curve=False)
        assert ds.get_evaluation_info("ev").timestamp == stamp and ds.count("ev_miou") == 2

        # every mask unreadable (found while evaluating): the key is left unregistered, nothing half-written
        for sample in ds:
            sample.ground_truth = fol.Segmentation(mask_path=str(tmp_path / "gone.png"))
            sample.save()
        with pytest.raises(ValueError, match="No sample could be evaluated"):
            ffe.evaluate_faseg(ds, "faseg", eval_key="new", threshold_curve=False)
        assert "new" not in ds.list_evaluations()
        assert not any(n.startswith("new_") for n in ds.get_field_schema()) and "new_errors" not in ds.mask_targets
        assert "new_worst" not in ds.list_saved_views()

        # the panels load on what is left
        _run_panel(ds, "on_load", {})
        assert ffe.list_faseg_evaluations(ds) == ["ev"] and ffe.unfinished_faseg_evaluations(ds) == []
    finally:
        ds.delete()


def test_case21_a_half_registered_key_from_older_versions_does_not_crash_anything(tmp_path):
    import plugins.panels.model_evaluation as model_evaluation

    ds = _dataset(tmp_path, [fol.Segmentation(mask=GT), fol.Segmentation(mask=GT)])
    try:
        # what older versions left when an evaluation raised midway: a run registered, no results
        config = ffe.FASegEvaluationConfig("faseg", "ground_truth")
        fous.SegmentationEvaluation.register_run(config.build(), ds, "old")
        assert "old" in ds.list_evaluations() and ds.load_evaluation_results("old") is None

        assert ffe.list_faseg_evaluations(ds) == [] and ffe.unfinished_faseg_evaluations(ds) == ["old"]
        with pytest.raises(ValueError, match="evaluation 'old' has no results.*reevaluate_faseg"):
            ffe.evaluation_summary(ds, "old")
        _run_panel(ds, "on_load", {"eval_key": "old"})  # the FA-Seg panel shows the others
        with pytest.raises(ValueError, match="has no results"):
            ffe.class_view(ds, "old", "cat")

        results = ffe.reevaluate_faseg(ds, "old")  # runs it again, into a finished evaluation
        assert ffe.list_faseg_evaluations(ds) == ["old"] and ds.count("old_miou") == 2
        assert ffe.evaluation_summary(ds, "old")["miou"] == pytest.approx(results.miou)
        _run_panel(ds, "on_load", {"eval_key": "old"})
        # FiftyOne's Model Evaluation panel reads it as a finished segmentation evaluation
        loaded = ds.load_evaluation_results("old")
        model_evaluation._init_segmentation_results(ds, loaded, "ground_truth")
        assert loaded.ytrue_ids is not None

        fous.SegmentationEvaluation.register_run(config.build(), ds, "older")
        ds.delete_evaluation("older")  # deleting one works too, and leaves the other alone
        assert ds.list_evaluations() == ["old"] and ds.count("old_miou") == 2
    finally:
        ds.delete()


def test_case22_label_objects_read_the_same_way_with_messages_a_run_can_show(tmp_path):
    from fiftyone_faseg.masks import MaskError, segmentation_mask

    path = _palette_png(tmp_path / "p.png", GT)
    np.testing.assert_array_equal(segmentation_mask(fol.Segmentation(mask_path=path), "gt", "s1"), GT)
    np.testing.assert_array_equal(segmentation_mask(fol.Segmentation(mask=GT == 1), "gt", "s1"), GT == 1)
    for seg in (fol.Segmentation(mask=_rgb(GT)), fol.Segmentation(mask=GT.astype(np.float32)),
                fol.Segmentation(mask_path=str(tmp_path / "gone.png"))):
        with pytest.raises(MaskError) as e:
            segmentation_mask(seg, "gt", "s1")
        assert "'gt' of sample s1" in str(e.value) and "evaluat" not in str(e.value).lower()

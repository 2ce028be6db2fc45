"""Iterating on a run: stored scores, re-threshold, sweep, candidate editing, rerun (SDK and operators)."""

import os

import fiftyone as fo
import fiftyone.operators as foo
import numpy as np
import pytest

import fiftyone_faseg as ff
from images import write_image
from fiftyone_faseg.analysis import iterate
from fiftyone_faseg.run import rerun, storage
from fiftyone_faseg.evaluation import evaluate_faseg
from fiftyone_faseg.run.outputs import HEATMAP_SIDE

PLUGIN = "@faseg/fiftyone-faseg/"
F16 = 1e-3  # float16 rounding of scores in [0, 1] (half-ulp 2.4e-4), through bicubic weights


@pytest.fixture(scope="module")
def run(stub_faseg, tiny_sd_dir, tmp_path_factory):
    """4 images with ground truth, segmented once with stored scores (masks in the DB and on disk) by the
    stub segmenter (the model is not under test; reruns load the tiny checkpoint the run records)."""
    tmp = tmp_path_factory.mktemp("iterate")
    ds = fo.Dataset()
    samples = []
    for i in range(4):
        h = 40 + 8 * i
        gt = np.zeros((h, 60), np.uint8)
        gt[h // 4 : h // 2, 20:] = 1 + i % 2
        gt[0, 0] = 255
        samples.append(fo.Sample(filepath=write_image(tmp / f"img{i}.png", h, 60, i), gt=fo.Segmentation(mask=gt)))
    ds.add_samples(samples)
    ds.mask_targets = {"gt": {0: "background", 1: "cat", 2: "dog"}}
    ds.save()
    kw = dict(classes=["dog", "cat"], segmenter=stub_faseg, model_path=str(tiny_sd_dir), batch_size=1,
              store_scores=True, threshold=0.55)
    ff.segment_samples(ds, heatmap=True, **kw)
    ff.segment_samples(ds, label_field="disk", output_dir=str(tmp / "out"), **kw)
    yield ds
    ds.delete()


def test_stored_scores_round_trip(run, stub_faseg, tmp_path):
    scores = np.random.RandomState(0).rand(3, 16, 16).astype(np.float32)
    path = storage.save_scores(str(tmp_path / "s.npz"), scores, ["a", "b c", "d"])
    loaded, names = storage.load_scores(path)
    assert names == ["a", "b c", "d"] and np.array_equal(loaded, scores.astype(np.float16).astype(np.float32))

    sample = run.first()
    stored, names = storage.load_scores(sample.faseg_scores)
    (fresh,) = stub_faseg(sample.filepath, ["dog", "cat"])
    assert names == ["dog", "cat"] and stored.shape == fresh.scores.shape
    assert np.abs(stored - fresh.scores).max() < F16
    heat = sample.faseg_heatmap.get_map()
    assert heat.dtype == np.uint8 and heat.shape == (HEATMAP_SIDE,) * 2
    assert os.path.isfile(sample.disk.mask_path)


def test_rethreshold_at_the_run_threshold_gives_the_run_masks(run):
    # a run with store_scores makes its masks from the stored float16 scores, through the
    # same labels-from-scores function as re-thresholding: the masks are reproduced exactly
    iterate.rethreshold(run, "faseg", 0.55, out_field="same")
    for sample in run:
        new, old = sample.same.get_mask(), sample.faseg.get_mask()
        assert new.dtype == old.dtype and np.array_equal(new, old)
    assert run.mask_targets["same"] == run.mask_targets["faseg"]


def test_rethreshold_new_threshold_classes_and_disk(run):
    written = iterate.rethreshold(run, "disk", 0.3, out_field="disk_03")
    assert len(written) == 4 and run.get_field("disk_03").info["faseg"]["threshold"] == 0.3
    low, high = 0, 0
    for sample in run:
        assert sample.disk_03.mask is None and os.path.isfile(sample.disk_03.mask_path)
        low += int((sample.disk_03.get_mask() > 0).sum())
        high += int((sample.disk.get_mask() > 0).sum())
    assert low >= high  # a lower threshold only adds foreground
    iterate.rethreshold(run, "faseg", 0.0, classes=["cat"], out_field="cat_only")
    values = np.unique(np.concatenate([s.cat_only.get_mask().ravel() for s in run]))
    cat = {n: v for v, n in run.mask_targets["cat_only"].items()}["cat"]
    assert set(values.tolist()) == {cat} and run.mask_targets["cat_only"] == run.mask_targets["faseg"]
    with pytest.raises(ValueError, match="not in mask_targets"):
        iterate.rethreshold(run, "faseg", 0.5, classes=["zebra"], out_field="x")
    with pytest.raises(ValueError, match="'gt' was not made by an FA-Seg run"):
        iterate.rethreshold(run, "gt", 0.5, out_field="x")


def test_sweep_equals_evaluate_faseg(run):
    thresholds = [0.3, 0.55, 0.8]
    miou = iterate.sweep(run, "faseg", "gt", thresholds)
    for t in thresholds:
        field = "sweep_%d" % int(t * 100)
        iterate.rethreshold(run, "faseg", t, out_field=field)
        results = evaluate_faseg(run, field, gt_field="gt", eval_key=field)
        assert miou[t] == pytest.approx(results.miou, abs=1e-12)
    assert list(iterate.sweep(run, "faseg", "gt")) == list(iterate.DEFAULT_THRESHOLDS)


def test_edit_candidates_operator_then_rerun_only_selected(run, tiny_sd_dir):
    ds = run
    target = ds.skip(1).first()
    others = {s.id: (s.faseg.get_mask().tobytes(), s.faseg_candidates.to_dict()) for s in ds if s.id != target.id}
    result = foo.execute_operator(PLUGIN + "edit_candidates", ctx=dict(
        dataset=ds, view=ds.view(), selected=[target.id],
        params=dict(label_field="faseg", classes=["cat"], new_classes="bird, ", mode="replace",
                    view_target="SELECTED_SAMPLES")))
    assert result.error is None, result.error
    target.reload()
    cands = target.faseg_candidates.classifications
    assert [c.label for c in cands] == ["cat", "bird"] and cands[1].source == "user"
    assert cands[0].source == "user" and rerun.get_candidates(ds.select(target.id), "faseg")[target.id] == ["cat", "bird"]

    ds.get_field("faseg").info["faseg"]["model_path"]  # recorded by the run
    result = foo.execute_operator(PLUGIN + "rerun_faseg", ctx=dict(
        dataset=ds, view=ds.view(), selected=[target.id],
        params=dict(label_field="faseg", model_path=str(tiny_sd_dir), view_target="SELECTED_SAMPLES")))
    assert result.error is None, result.error
    assert ds.mask_targets["faseg"] == {1: "dog", 2: "cat", 3: "bird"}
    for sample in ds:
        if sample.id == target.id:
            assert set(np.unique(sample.faseg.get_mask())) <= {0, 2, 3}
            assert storage.load_scores(sample.faseg_scores)[1] == ["cat", "bird"]
        else:
            assert sample.faseg.get_mask().tobytes() == others[sample.id][0]
            assert sample.faseg_candidates.to_dict() == others[sample.id][1]


def test_set_candidates_modes(run):
    view = run.limit(2)
    rerun.set_candidates(view, "scratch", ["a", "b"])
    rerun.set_candidates(view, "scratch", ["c", "a"], mode="add")
    rerun.set_candidates(view, "scratch", ["b"], mode="remove")
    assert list(rerun.get_candidates(view, "scratch").values()) == [["a", "c"]] * 2
    with pytest.raises(ValueError, match="unknown mode"):
        rerun.set_candidates(view, "scratch", ["a"], mode="merge")


def test_operators_register_and_run(run):
    for name in ("rethreshold_faseg", "sweep_faseg_threshold", "edit_candidates", "rerun_faseg"):
        assert foo.get_operator(PLUGIN + name).config.name == name
    params = dict(label_field="faseg", gt_field="gt", start=0.3, stop=0.8, step=0.25, view_target="CURRENT_VIEW")
    result = foo.execute_operator(PLUGIN + "sweep_faseg_threshold", ctx=dict(dataset=run, view=run.view(), params=params))
    assert result.error is None, result.error
    out = result.result
    assert [row["threshold"] for row in out["table"]] == [0.3, 0.55, 0.8] and out["plot"][0]["x"] == [0.3, 0.55, 0.8]
    expected = iterate.sweep(run, "faseg", "gt", [0.3, 0.55, 0.8])
    assert out["best_miou"] == max(v for v in expected.values() if v is not None)

    # delegated: queued, then executed as a `fiftyone delegated launch` worker does
    params = dict(label_field="faseg", threshold=0.4, out_field="op_04", view_target="CURRENT_VIEW")
    foo.execute_operator(PLUGIN + "rethreshold_faseg", ctx=dict(dataset=run, view=run.limit(2), params=params),
                         request_delegation=True)
    assert "op_04" not in run.get_field_schema()
    from fiftyone.operators.delegated import DelegatedOperationService

    DelegatedOperationService().execute_queued_operations(dataset_name=run.name)
    run.reload()
    assert run.count("op_04") == 2
    expected = iterate.rethreshold(run.limit(2), "faseg", 0.4, out_field="sdk_04")
    for sample in run.select(expected):
        assert np.array_equal(sample.op_04.get_mask(), sample.sdk_04.get_mask())

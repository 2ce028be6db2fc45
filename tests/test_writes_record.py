"""The record is the field's whole meaning, final only when the data is (issue 18,
cases 2, 5, 6, 7, 8 and 10). Real database, the tiny model."""

import os

import fiftyone as fo
import numpy as np
import pytest

import fiftyone_faseg as ff
from images import write_image
from fiftyone_faseg.analysis import iterate
from fiftyone_faseg.run import rerun
from fiftyone_faseg.evaluation import evaluate_faseg, is_stale
from fiftyone_faseg.evaluation.summary import threshold_curve
from fiftyone_faseg.run.settings import RUN_ATTR
from fiftyone_faseg.run.settings import RunRecord

KW = dict(classes=["cat", "dog"], threshold=0.3, batch_size=1)


@pytest.fixture
def dataset(tmp_path):
    ds = fo.Dataset()
    samples = []
    for i in range(4):
        gt = np.zeros((40, 56), np.uint8)
        gt[10:20, 20:] = 1 + i % 2
        samples.append(fo.Sample(filepath=write_image(tmp_path / ("%d.png" % i), seed=i, w=56),
                                 ground_truth=fo.Segmentation(mask=gt)))
    ds.add_samples(samples)
    ds.mask_targets = {"ground_truth": {0: "background", 1: "cat", 2: "dog"}}
    ds.save()
    yield ds
    if fo.dataset_exists(ds.name):
        ds.delete()


def masks(ds, field="faseg"):
    return {s.id: s[field].get_mask().copy() for s in ds.exists(field)}


def test_case02_an_interrupted_overwrite_resumed_with_skip_existing_is_finished(dataset, tiny_faseg):
    ff.segment_samples(dataset, segmenter=tiny_faseg, **KW)
    old = masks(dataset)
    steps = ff.iter_segment_samples(dataset, segmenter=tiny_faseg, overwrite=True, **dict(KW, threshold=0.95))
    next(steps)
    steps.close()  # interrupted (the batch being written when it stopped is kept)
    record = RunRecord.read(dataset, "faseg")
    assert record.in_progress and record.pending and record.threshold == 0.95  # never "final" mid-overwrite
    done = dataset.values("faseg." + RUN_ATTR).count(record.run_id)
    assert 0 < done < 4

    summary = ff.segment_samples(dataset, segmenter=tiny_faseg, skip_existing=True, **dict(KW, threshold=0.95))
    assert len(summary.processed) == 4 - done and len(summary.skipped) == done
    record = RunRecord.read(dataset, "faseg")
    assert not record.in_progress and not record.pending
    assert set(dataset.values("faseg." + RUN_ATTR)) == {record.run_id}
    ff.segment_samples(dataset, label_field="fresh", segmenter=tiny_faseg, **dict(KW, threshold=0.95))
    fresh = masks(dataset, "fresh")
    assert all(np.array_equal(m, fresh[i]) for i, m in masks(dataset).items())  # every mask at 0.95
    assert any(not np.array_equal(m, fresh[i]) for i, m in old.items())  # (and 0.95 differs from 0.3)


def test_case05_rethreshold_into_a_field_made_with_pamr_is_refused(dataset, tiny_faseg):
    ff.segment_samples(dataset, segmenter=tiny_faseg, store_scores=True, **KW)
    ff.segment_samples(dataset, label_field="pamr", segmenter=tiny_faseg, store_scores=True, pamr=True, **KW)
    before, record = masks(dataset, "pamr"), RunRecord.read(dataset, "pamr")
    with pytest.raises(ValueError, match=r"3 other samples of 'pamr' .*pamr=True \(asked False\)"):
        iterate.rethreshold(dataset.limit(1), "faseg", 0.3, out_field="pamr", overwrite=True)
    after = masks(dataset, "pamr")
    assert all(np.array_equal(before[i], after[i]) for i in before)
    assert RunRecord.read(dataset, "pamr") == record


def test_case06_rerunning_one_sample_keeps_the_fields_class_subset(dataset, tiny_faseg):
    ff.segment_samples(dataset, segmenter=tiny_faseg, store_scores=True, **KW)
    iterate.rethreshold(dataset, "faseg", 0.3, classes=["cat"])
    cat = dataset.mask_targets["faseg"]
    dog = {n: int(v) for v, n in cat.items()}["dog"]
    one = dataset.limit(1)
    rerun.rerun(one, "faseg", segmenter=tiny_faseg)
    record = RunRecord.read(dataset, "faseg")
    assert record.classes == ["cat"] and not record.in_progress
    for mask in masks(dataset).values():
        assert dog not in np.unique(mask)
    # the rerun sample is what re-thresholding its new scores to the subset gives
    iterate.rethreshold(one, "faseg", 0.3, classes=["cat"], out_field="check")
    assert np.array_equal(one.first().check.get_mask(), one.first().faseg.get_mask())
    with pytest.raises(ValueError, match="were made with classes"):  # a run without the subset cannot resume
        ff.segment_samples(dataset, segmenter=tiny_faseg, store_scores=True, skip_existing=True, **KW)


def test_case07_an_evaluation_made_mid_run_is_stale_once_the_run_writes_more(dataset, tiny_faseg):
    steps = ff.iter_segment_samples(dataset, segmenter=tiny_faseg, **KW)
    next(steps)
    evaluate_faseg(dataset.exists("faseg"), "faseg", eval_key="mid", threshold_curve=False, per_class=False,
                   error_masks=False)
    assert is_stale(dataset, "mid")  # the field is being written
    for _ in steps:
        pass
    assert is_stale(dataset, "mid")  # and was written after the evaluation
    evaluate_faseg(dataset, "faseg", eval_key="after", threshold_curve=False, per_class=False, error_masks=False)
    assert not is_stale(dataset, "after")
    ff.segment_samples(dataset.limit(1), segmenter=tiny_faseg, overwrite=True, **KW)  # a partial write
    assert is_stale(dataset, "after")


def test_case08_the_curve_of_a_copy_never_reads_a_rewritten_source(dataset, tiny_faseg):
    ff.segment_samples(dataset, segmenter=tiny_faseg, store_scores=True, **KW)
    iterate.rethreshold(dataset, "faseg", 0.4, out_field="copy")
    curve, note = threshold_curve(dataset, "copy", "ground_truth")
    assert note is None and curve["scores_field"] == "faseg"
    assert RunRecord.read(dataset, "copy").source_revision == RunRecord.read(dataset, "faseg").scores_revision
    iterate.rethreshold(dataset, "faseg", 0.6)  # new masks in place, the same scores: the copy's curve holds
    assert threshold_curve(dataset, "copy", "ground_truth")[1] is None
    ff.segment_samples(dataset, segmenter=tiny_faseg, store_scores=True, overwrite=True,
                       **dict(KW, classes=["bird", "cow"]))
    curve, note = threshold_curve(dataset, "copy", "ground_truth")
    assert curve is None and "has been written since" in note
    with pytest.raises(ValueError, match="has been written since"):
        iterate.scores_source(dataset, "copy")
    iterate.rethreshold(dataset, "faseg", 0.4, out_field="copy", overwrite=True)  # made again: curve again
    assert threshold_curve(dataset, "copy", "ground_truth")[1] is None


def test_case10_skip_existing_redoes_a_lost_heatmap_png(dataset, tiny_faseg, tmp_path):
    kw = dict(KW, heatmap=True, output_dir=str(tmp_path / "out"))
    ff.segment_samples(dataset, segmenter=tiny_faseg, **kw)
    lost = dataset.first()
    os.remove(lost.faseg_heatmap.map_path)
    summary = ff.segment_samples(dataset, segmenter=tiny_faseg, skip_existing=True, **kw)
    assert summary.processed == [lost.id] and len(summary.skipped) == 3
    assert os.path.isfile(dataset[lost.id].faseg_heatmap.map_path)

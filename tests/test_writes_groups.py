"""Every entry point reads the collection it was given (issue 18, case 1), and class
names never reach a query as operators or paths (case 17). Real database, the tiny model."""

import fiftyone as fo
import numpy as np
import pytest

import fiftyone_faseg as ff
from images import write_image
from fiftyone_faseg.analysis import iterate
from fiftyone_faseg.run import rerun
from fiftyone_faseg.evaluation.summary import threshold_curve
from fiftyone_faseg.run.settings import RunRecord

KW = dict(classes=["cat", "dog"], threshold=0.3, batch_size=2)


@pytest.fixture(scope="module")
def grouped(tmp_path_factory):
    """3 groups of two image slices (6 images), ground truth on each; the README's route
    to its images is ``select_group_slices(media_type="image")``."""
    tmp = tmp_path_factory.mktemp("groups")
    ds = fo.Dataset()
    ds.add_group_field("group", default="left")
    samples = []
    for g in range(3):
        group = fo.Group()
        for k, name in enumerate(("left", "right")):
            gt = np.zeros((40, 56), np.uint8)
            gt[10:20, 20:] = 1 + (g + k) % 2
            samples.append(fo.Sample(filepath=write_image(tmp / ("%d%s.png" % (g, name)), seed=2 * g + k, w=56),
                                     group=group.element(name), ground_truth=fo.Segmentation(mask=gt)))
    ds.add_samples(samples)
    ds.mask_targets = {"ground_truth": {0: "background", 1: "cat", 2: "dog"}}
    ds.save()
    yield ds
    ds.delete()


@pytest.fixture
def images(grouped):
    view = grouped.select_group_slices(media_type="image")
    assert len(view) == 6 and len(grouped) == 3  # the active slice alone has 3
    return view


def labelled(view, field):
    return view.exists(field).count()


def test_case01_every_entry_point_covers_every_image_of_a_grouped_view(images, tiny_faseg):
    summary = ff.segment_samples(images, segmenter=tiny_faseg, store_scores=True, **KW)
    assert len(summary.processed) == 6 and labelled(images, "faseg") == 6

    assert len(iterate.rethreshold(images, "faseg", 0.45, out_field="faseg_045")) == 6
    assert labelled(images, "faseg_045") == 6
    # in place too (the record's subset applies to every image)
    assert len(iterate.rethreshold(images, "faseg", 0.3)) == 6

    # the sweep counts every pixel of the six ground truth masks
    _, confusions = iterate.sweep_confusions(images, "faseg", "ground_truth", [0.3])
    assert confusions[0.3].sum() == 6 * 40 * 56
    curve, note = threshold_curve(images, "faseg_045", "ground_truth")
    assert note is None
    assert curve["miou"][curve["thresholds"].index(0.3)] == pytest.approx(iterate.sweep(
        images, "faseg", "ground_truth", [0.3])[0.3], abs=1e-12)

    # candidates read from every image; a rerun writes every image
    other = ff.segment_samples(images, label_field="again", classes_from="candidates",
                               classes_field="faseg_candidates", segmenter=tiny_faseg, threshold=0.3)
    assert len(other.processed) == 6 and labelled(images, "again") == 6
    assert rerun.set_candidates(images, "faseg", ["cat"]) == 6
    summary = rerun.rerun(images, "faseg", segmenter=tiny_faseg)
    assert len(summary.processed) == 6 and not summary.failed
    names = images.values("faseg_candidates.classifications.label")
    assert names == [["cat"]] * 6
    assert not RunRecord.read(images._dataset, "faseg").in_progress


@pytest.mark.parametrize("classes", [["image", "$media_type"], ["$", "a.b", "$in", "cat"]])
def test_case17_class_names_are_data_never_operators(classes, tiny_faseg, tmp_path):
    ds = fo.Dataset()
    try:
        ds.add_samples([fo.Sample(filepath=write_image(tmp_path / ("%d.png" % i), seed=i, w=56)) for i in range(2)])
        summary = ff.segment_samples(ds, segmenter=tiny_faseg, classes=classes, threshold=0.3, store_scores=True)
        assert len(summary.processed) == 2
        targets = ds.mask_targets["faseg"]
        assert sorted(targets.values()) == sorted(classes) and len(set(targets)) == len(classes)
        for sample in ds:
            assert [c.label for c in sample.faseg_candidates.classifications] == classes
            assert set(np.unique(sample.faseg.get_mask()).tolist()) <= set(targets) | {0}
        # again, with the names known: each keeps its value; re-threshold keeps a subset of them
        ff.segment_samples(ds, segmenter=tiny_faseg, classes=classes, threshold=0.3, store_scores=True,
                           overwrite=True)
        assert ds.mask_targets["faseg"] == targets
        iterate.rethreshold(ds, "faseg", 0.3, classes=classes[1:], out_field="sub")
        assert RunRecord.read(ds, "sub").classes == sorted(classes[1:])
    finally:
        ds.delete()

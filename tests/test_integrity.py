"""No run, rerun or re-threshold loses, mislabels or misplaces data (issue 10).

One regression test per way it used to happen, each on the real database with the tiny
model. A run that would lose data is refused before anything is written: these tests
check the refusal and that nothing changed.
"""

import os
import subprocess
import sys
import textwrap
import zlib
import struct

import fiftyone as fo
import numpy as np
import pytest

import fiftyone_faseg as ff
from images import write_image
from fiftyone_faseg.analysis import iterate
from fiftyone_faseg.run.outputs import RunError
from fiftyone_faseg.run.plan import files_root

KW = dict(classes=["cat", "dog"], threshold=0.3, batch_size=2)
TESTS = os.path.dirname(os.path.abspath(__file__))  # for the stub segmenter in subprocesses


@pytest.fixture
def dataset(tmp_path):
    ds = fo.Dataset()
    samples = []
    for i in range(3):
        gt = np.zeros((40, 56), np.uint8)
        gt[10:20, 20:] = 1 + i % 2
        path = write_image(tmp_path / ("%d.png" % i), seed=i, w=56)
        samples.append(fo.Sample(filepath=path, ground_truth=fo.Segmentation(mask=gt)))
    ds.add_samples(samples)
    ds.mask_targets = {"ground_truth": {0: "background", 1: "cat", 2: "dog"}}
    ds.save()
    yield ds
    if fo.dataset_exists(ds.name):
        ds.delete()


def masks(ds, field="faseg"):
    return {s.id: s[field].get_mask().copy() for s in ds.exists(field)}


def same_masks(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_case01_a_view_hiding_the_field_cannot_bypass_protection(dataset, tiny_faseg):
    ff.segment_samples(dataset, segmenter=tiny_faseg, **KW)
    before = masks(dataset)
    for view in (dataset.exclude_fields("faseg"), dataset.select_fields("ground_truth")):
        with pytest.raises(ValueError, match="already has labels on 3 of these samples"):
            ff.segment_samples(view, segmenter=tiny_faseg, **dict(KW, threshold=0.3))
        summary = ff.segment_samples(view, segmenter=tiny_faseg, skip_existing=True, **KW)
        assert len(summary.skipped) == 3 and not summary.processed
    assert same_masks(masks(dataset), before)


def _run_in_subprocess(code, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


_WORKER = """
    import sys
    import time
    sys.path.insert(0, sys.argv[6])  # tests/, for the stub segmenter (the model is not under test)
    import fiftyone as fo
    import fiftyone_faseg as ff
    from faseg_core import FASegConfig
    from fiftyone_faseg.run.leases import FieldBusyError
    from stubs import StubSegmenter
    seg = StubSegmenter.from_checkpoint(sys.argv[1], FASegConfig().at_image_size(128))
    ds = fo.load_dataset(sys.argv[2])
    ids = sys.argv[3].split(",")
    while True:  # one writer per field: a writer refused while the other holds the field tries again
        try:
            ff.segment_samples(ds.select(ids), label_field=sys.argv[4], classes=sys.argv[5].split(","),
                               segmenter=seg, threshold=0.3, batch_size=1, skip_existing=True)
            break
        except FieldBusyError:
            time.sleep(0.2)
"""


def test_case02_two_processes_write_one_field_without_mixing_classes(dataset, tiny_sd_dir, tmp_path):
    for i in range(3, 8):
        dataset.add_sample(fo.Sample(filepath=write_image(tmp_path / ("%d.png" % i), seed=i, w=56)))
    ids = dataset.values("id")
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(_WORKER))
    jobs = [(ids[:4], "cat,dog"), (ids[4:], "bird,dog,cow")]
    procs = [subprocess.Popen([sys.executable, str(script), str(tiny_sd_dir), dataset.name, ",".join(part), "faseg",
                               names, TESTS], stderr=subprocess.PIPE, text=True) for part, names in jobs]
    for proc in procs:
        assert proc.wait(300) == 0, proc.stderr.read()[-3000:]
    dataset.reload()
    targets = dataset.mask_targets["faseg"]
    assert sorted(targets.values()) == ["bird", "cat", "cow", "dog"]  # each name once, one value each
    assert len(set(targets)) == 4 and dataset.mask_targets["ground_truth"] == {0: "background", 1: "cat", 2: "dog"}
    for sample in dataset:
        names = {c.label for c in sample.faseg_candidates.classifications}
        values = set(np.unique(sample.faseg.get_mask()).tolist()) - {0}
        assert {targets[v] for v in values} <= names  # every pixel reads back as one of its own classes


def test_case02_a_stale_handle_never_deletes_another_fields_targets(dataset, stub_faseg, tiny_sd_dir, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(_WORKER))
    ids = ",".join(dataset.values("id"))
    subprocess.run([sys.executable, str(script), str(tiny_sd_dir), dataset.name, ids, "other", "sofa", TESTS],
                   check=True)
    # this process's dataset object has not seen 'other' yet
    assert "other" not in dataset.mask_targets
    ff.segment_samples(dataset, segmenter=stub_faseg, **KW)
    assert fo.load_dataset(dataset.name).mask_targets["other"] == {1: "sofa"}
    dataset.reload()
    assert set(dataset.mask_targets) == {"ground_truth", "faseg", "other"}


class _Broken:
    """A real segmenter whose every call fails, as a checkpoint whose text encoder does not fit its UNet."""

    def __init__(self, seg):
        self._seg = seg

    def __getattr__(self, name):
        return getattr(self._seg, name)

    def __call__(self, *args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (2x768 and 32x32)")


def test_case03_errors_of_the_run_never_delete_existing_masks(dataset, tiny_faseg):
    ff.segment_samples(dataset, segmenter=tiny_faseg, **KW)
    before, targets = masks(dataset), dict(dataset.mask_targets["faseg"])
    with pytest.raises(ValueError, match="80 tokens long; a CLIP prompt holds 75"):
        ff.segment_samples(dataset, segmenter=tiny_faseg, overwrite=True, **dict(KW, classes=["cat " * 80]))
    with pytest.raises(RunError, match="every image of a batch"):
        ff.segment_samples(dataset, segmenter=_Broken(tiny_faseg), overwrite=True, **KW)
    assert same_masks(masks(dataset), before) and dataset.mask_targets["faseg"] == targets
    assert dataset.exists("faseg_error").count() == 0


def _bomb_png(path, side=20000):
    """A ~60-byte PNG whose header claims side x side pixels."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)))
    return str(path)


def test_case04_a_decompression_bomb_is_one_samples_error(dataset, tiny_faseg, tmp_path):
    bomb = fo.Sample(filepath=_bomb_png(tmp_path / "bomb.png"))
    dataset.add_sample(bomb)
    summary = ff.segment_samples(dataset, segmenter=tiny_faseg, **dict(KW, batch_size=4))
    assert len(summary.processed) == 3 and list(summary.failed) == [bomb.id]
    assert "bomb.png" in summary.failed[bomb.id] and "DecompressionBomb" in summary.failed[bomb.id]
    assert dataset.exists("faseg").count() == 3


@pytest.mark.parametrize("field", ["/tmp/x/abs", "../up", "ground_truth.pred", "a b", "filepath"])
def test_case05_10_label_fields_that_are_paths_or_nested_are_refused(dataset, tiny_faseg, field, tmp_path):
    with pytest.raises(ValueError):
        ff.segment_samples(dataset, label_field=field, segmenter=tiny_faseg, output_dir=str(tmp_path / "o"), **KW)
    assert not (tmp_path / "o").exists() and "ground_truth" in dataset.get_field_schema()
    assert dataset.first().ground_truth.has_mask and set(dataset.mask_targets) == {"ground_truth"}


def test_case05_files_stay_under_the_runs_root_whatever_the_dataset_name(tiny_faseg, tmp_path):
    ds = fo.Dataset("../../faseg-escape-%d" % os.getpid())
    try:
        ds.add_sample(fo.Sample(filepath=write_image(tmp_path / "a.png", seed=0, w=56)))
        ff.segment_samples(ds, segmenter=tiny_faseg, store_scores=True, heatmap=True, **KW)
        base = os.path.realpath(os.path.join(fo.config.default_dataset_dir, "faseg"))
        path = os.path.realpath(ds.first().faseg_scores)
        assert path.startswith(base + os.sep) and path.startswith(files_root(ds))
    finally:
        ds.delete()


def test_case06_a_clone_never_rewrites_the_originals_files(dataset, stub_faseg, tmp_path):
    out = str(tmp_path / "masks")
    ff.segment_samples(dataset, segmenter=stub_faseg, output_dir=out, store_scores=True, **KW)
    files = {s.id: (s.faseg.mask_path, s.faseg_scores) for s in dataset}
    contents = {p: open(p, "rb").read() for pair in files.values() for p in pair}
    clone = dataset.clone()
    try:
        ff.segment_samples(clone, segmenter=stub_faseg, output_dir=out, store_scores=True, overwrite=True,
                           **dict(KW, classes=["dog"]))
        iterate.rethreshold(clone, "faseg", 0.9)
        for sample in clone:
            assert sample.faseg.mask_path not in contents and sample.faseg_scores not in contents
        assert all(open(p, "rb").read() == data for p, data in contents.items())
        assert {s.id: (s.faseg.mask_path, s.faseg_scores) for s in dataset} == files
    finally:
        clone.delete()


def test_case07_rethreshold_of_a_subset_never_changes_other_samples_values(dataset, stub_faseg):
    ff.segment_samples(dataset, segmenter=stub_faseg, store_scores=True, **KW)
    iterate.rethreshold(dataset, "faseg", 0.2, out_field="faseg2")
    before, targets = masks(dataset, "faseg2"), dict(dataset.mask_targets["faseg2"])
    subset = dataset.limit(1)
    with pytest.raises(ValueError, match="other samples of 'faseg2' were made at threshold 0.2"):
        iterate.rethreshold(subset, "faseg", 0.6, out_field="faseg2", overwrite=True)
    with pytest.raises(ValueError, match="other samples of 'faseg' were made at threshold 0.3"):
        iterate.rethreshold(subset, "faseg", 0.6)  # in place: the field would mix thresholds
    assert same_masks(masks(dataset, "faseg2"), before) and dataset.mask_targets["faseg2"] == targets

    # a new class in the source field never renumbers the copy's classes
    ff.segment_samples(subset, segmenter=stub_faseg, store_scores=True, overwrite=True,
                       **dict(KW, classes=["bird", "dog"]))
    iterate.rethreshold(subset, "faseg", 0.2, out_field="faseg2", overwrite=True)
    assert {k: v for k, v in dataset.mask_targets["faseg2"].items() if k in targets} == targets
    others = dataset.exclude(subset.values("id"))
    assert same_masks(masks(others, "faseg2"), {k: v for k, v in before.items() if k in set(others.values("id"))})


def test_case08_skip_existing_completes_samples_with_missing_side_files(dataset, tiny_faseg, tmp_path):
    ff.segment_samples(dataset, segmenter=tiny_faseg, store_scores=True, output_dir=str(tmp_path / "o"), **KW)
    first, second = dataset.values("id")[:2]
    dataset.select(first).set_values("faseg_scores", [None])  # a kill between two field writes
    os.remove(dataset[second].faseg.mask_path)  # a lost mask file
    summary = ff.segment_samples(dataset, segmenter=tiny_faseg, store_scores=True, output_dir=str(tmp_path / "o"),
                                 skip_existing=True, **KW)
    assert sorted(summary.processed) == sorted([first, second]) and len(summary.skipped) == 1
    assert os.path.isfile(dataset[first].faseg_scores) and os.path.isfile(dataset[second].faseg.mask_path)
    assert len(iterate.rethreshold(dataset, "faseg", 0.3)) == 3


def test_case10_the_ground_truth_is_never_written(dataset, tiny_faseg):
    gt = masks(dataset, "ground_truth")
    for kwargs in (dict(label_field="ground_truth", skip_existing=True), dict(label_field="ground_truth.pred"),
                   dict(label_field="faseg", gt_field="faseg", classes_from="gt_field")):
        with pytest.raises(ValueError):
            ff.segment_samples(dataset, segmenter=tiny_faseg, **dict(KW, **kwargs))
    assert same_masks(masks(dataset, "ground_truth"), gt)
    assert dataset.mask_targets == {"ground_truth": {0: "background", 1: "cat", 2: "dog"}}


def test_case11_a_field_of_another_type_is_refused_before_any_file(dataset, tiny_faseg, tmp_path):
    dataset.set_values("hm", [fo.Heatmap(map=np.zeros((4, 4), np.uint8))] * 3)
    with pytest.raises(ValueError, match="'hm' holds Heatmap values, not FA-Seg masks"):
        ff.segment_samples(dataset, label_field="hm", segmenter=tiny_faseg, overwrite=True,
                           output_dir=str(tmp_path / "o"), **KW)
    assert not (tmp_path / "o").exists() and dataset.first().hm.map.shape == (4, 4)


def test_case12_generated_views_are_refused_before_any_write(dataset, tiny_faseg):
    dataset.set_values("dets", [fo.Detections(detections=[fo.Detection(label="cat", bounding_box=[0, 0, .5, .5])])
                                for _ in range(3)])
    patches = dataset.to_patches("dets")
    with pytest.raises(ValueError, match="a patches view"):
        ff.segment_samples(patches, segmenter=tiny_faseg, **KW)
    assert "faseg" not in patches.get_field_schema() and "faseg" not in dataset.get_field_schema()


def test_case13_resuming_with_other_settings_is_refused(dataset, tiny_faseg):
    ff.segment_samples(dataset.limit(2), segmenter=tiny_faseg, store_scores=True, **KW)
    for change in (dict(threshold=0.5), dict(store_scores=False)):
        with pytest.raises(ValueError, match="2 samples of 'faseg' were made with"):
            ff.segment_samples(dataset, segmenter=tiny_faseg, skip_existing=True,
                               **dict(KW, **dict(dict(store_scores=True), **change)))
    assert dataset.exists("faseg").count() == 2
    # the same settings resume; overwriting every sample may change them
    ff.segment_samples(dataset, segmenter=tiny_faseg, skip_existing=True, store_scores=True, **KW)
    ff.segment_samples(dataset, segmenter=tiny_faseg, overwrite=True, store_scores=True, **dict(KW, threshold=0.5))
    assert iterate.run_settings(dataset, "faseg")["threshold"] == 0.5


@pytest.mark.parametrize("bad", [dict(threshold=1.5), dict(batch_size=0), dict(image_size=100),
                                 dict(model_path="/no/such/checkpoint"), dict(caption_field="nope")])
def test_case16_bad_settings_fail_before_any_write(dataset, bad):
    with pytest.raises(ValueError):
        ff.segment_samples(dataset, **dict(KW, **bad))
    assert set(dataset.mask_targets) == {"ground_truth"}
    assert not [f for f in dataset.get_field_schema() if f.startswith("faseg")]

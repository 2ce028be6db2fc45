"""Running FA-Seg over FiftyOne datasets: segment_samples, FASegModel, the run_faseg operator."""

import os

import fiftyone as fo
import fiftyone.operators as foo
import numpy as np
import pytest
from PIL import Image

import fiftyone_faseg as ff
from images import write_image
from fiftyone_faseg.run import classes as fcl

RUN_URI = "@faseg/fiftyone-faseg/run_faseg"


@pytest.fixture
def dataset(tmp_path):
    ds = fo.Dataset()
    samples = [fo.Sample(filepath=write_image(tmp_path / f"img{i}.png", 40 + 8 * i, 60, seed=i)) for i in range(4)]
    (tmp_path / "text.jpg").write_text("not an image")
    samples.append(fo.Sample(filepath=str(tmp_path / "text.jpg")))
    samples.append(fo.Sample(filepath=str(tmp_path / "missing.png")))
    ds.add_samples(samples)
    yield ds
    ds.delete()


def test_segment_samples_stores_masks_candidates_errors(dataset, tiny_faseg):
    summary = ff.segment_samples(dataset, classes=["cat", "dog"], segmenter=tiny_faseg)
    assert len(summary.processed) == 4 and len(summary.failed) == 2
    assert dataset.mask_targets["faseg"] == {1: "cat", 2: "dog"}
    good = dataset.exists("faseg")
    assert good.count() == 4
    for sample in good:
        mask = sample.faseg.get_mask()
        with Image.open(sample.filepath) as image:
            assert mask.shape == (image.height, image.width)
        assert set(np.unique(mask)) <= {0, 1, 2}
        assert [c.label for c in sample.faseg_candidates.classifications] == ["cat", "dog"]
        assert all(c.source == "user" for c in sample.faseg_candidates.classifications)
        assert sample.faseg_error is None and sample.faseg_caption is None
    errors = dataset.exists("faseg_error")
    assert sorted(os.path.basename(p) for p in errors.values("filepath")) == ["missing.png", "text.jpg"]
    assert "not a readable image" in errors.match(fo.ViewField("filepath").ends_with("text.jpg")).first().faseg_error
    assert "does not exist" in errors.match(fo.ViewField("filepath").ends_with("missing.png")).first().faseg_error


def test_masks_equal_the_core_results(dataset, tiny_faseg):
    # batch 1 on both sides: batched convolutions round differently (see test_pipeline)
    ff.segment_samples(dataset, classes=["cat", "dog"], segmenter=tiny_faseg, batch_size=1)
    sample = dataset.exists("faseg").first()
    (result,) = tiny_faseg(sample.filepath, ["cat", "dog"])
    assert np.array_equal(sample.faseg.get_mask(), result.label_map)


def test_output_dir_masks_on_disk(dataset, tiny_faseg, tmp_path):
    out = tmp_path / "masks"
    ff.segment_samples(dataset, classes=["cat", "dog"], segmenter=tiny_faseg, output_dir=str(out))
    ff.segment_samples(dataset, label_field="inline", classes=["cat", "dog"], segmenter=tiny_faseg)
    for sample in dataset.exists("faseg"):
        assert sample.faseg.mask is None and os.path.isfile(sample.faseg.mask_path)
        assert np.array_equal(sample.faseg.get_mask(), sample.inline.get_mask())
    folder = os.path.join(out, str(dataset._doc.id), "faseg")  # under this dataset's own root
    assert sorted(os.listdir(folder)) == sorted(s.id + ".png" for s in dataset.exists("faseg"))


def test_existing_labels_are_never_overwritten_silently(dataset, tiny_faseg, tmp_path):
    ff.segment_samples(dataset, classes=["cat", "dog"], segmenter=tiny_faseg)
    before = {s.id: s.faseg.get_mask().copy() for s in dataset.exists("faseg")}
    with pytest.raises(ValueError, match="already has labels on 4 of these samples: pass overwrite=True"):
        ff.segment_samples(dataset, classes=["cat", "dog"], segmenter=tiny_faseg)

    # the unreadable image is fixed: skip_existing processes only samples without a mask
    bad = dataset.match(fo.ViewField("filepath").ends_with("text.jpg")).first()
    os.remove(bad.filepath)
    write_image(bad.filepath.replace(".jpg", ".png"), seed=9)
    os.rename(bad.filepath.replace(".jpg", ".png"), bad.filepath)
    summary = ff.segment_samples(dataset, classes=["cat", "dog", "bird"], segmenter=tiny_faseg, skip_existing=True)
    assert len(summary.skipped) == 4 and len(summary.processed) == 1 and len(summary.failed) == 1
    bad.reload()
    assert bad.faseg is not None and bad.faseg_error is None  # error cleared by the later success
    for sample in dataset.select(list(before)):
        assert np.array_equal(sample.faseg.get_mask(), before[sample.id])
    assert dataset.mask_targets["faseg"] == {1: "cat", 2: "dog", 3: "bird"}  # ids kept, bird added

    summary = ff.segment_samples(dataset, classes=["dog"], segmenter=tiny_faseg, overwrite=True)
    assert len(summary.processed) == 5
    assert dataset.mask_targets["faseg"][2] == "dog"
    assert set(np.unique(dataset.exists("faseg").first().faseg.get_mask())) <= {0, 2}


def test_classes_from_ground_truth_use_its_values(tmp_path, tiny_faseg):
    ds = fo.Dataset()
    gt_targets = {0: "background", 1: "cat", 2: "dog", 5: "bird"}
    samples = []
    for i, present in enumerate([(1, 5), (2,), ()]):
        mask = np.zeros((40, 60), np.uint8)
        for j, v in enumerate(present):
            mask[j * 10 : j * 10 + 8] = v
        mask[-1, -1] = 255
        samples.append(fo.Sample(filepath=write_image(tmp_path / f"g{i}.png", seed=i), gt=fo.Segmentation(mask=mask)))
    ds.add_samples(samples)
    ds.mask_targets = {"gt": gt_targets}
    ds.save()
    summary = ff.segment_samples(ds, classes_from="gt_field", gt_field="gt", segmenter=tiny_faseg)
    assert ds.mask_targets["faseg"] == {1: "cat", 2: "dog", 5: "bird"}
    cands = [[c.label for c in s.faseg_candidates.classifications] if s.faseg_candidates else None for s in ds]
    assert cands == [["cat", "bird"], ["dog"], None]
    assert "no candidate classes for sample" in summary.failed[ds.last().id]
    assert set(np.unique(ds.first().faseg.get_mask())) <= {0, 1, 5}

    ff.segment_samples(ds, label_field="all", classes_from="mask_targets", gt_field="gt", segmenter=tiny_faseg)
    assert [c.label for c in ds.last()["all_candidates"].classifications] == ["cat", "dog", "bird"]


def test_classes_are_required(dataset, tiny_faseg):
    with pytest.raises(ValueError, match="no candidate classes: pass classes="):
        ff.segment_samples(dataset, segmenter=tiny_faseg)
    with pytest.raises(ValueError, match="needs gt_field"):
        ff.segment_samples(dataset, classes_from="gt_field", segmenter=tiny_faseg)


def test_assign_ids_keeps_existing_and_prefers_ground_truth():
    ids = fcl.assign_ids(["dog", "cat", "zebra"], existing={1: "cat"}, preferred={7: "Dog", 1: "zebra"})
    assert ids == {"cat": 1, "dog": 7, "zebra": 2}
    assert fcl.assign_ids([f"c{i}" for i in range(300)])["c299"] == 301  # 255 is never a class


def test_fasegmodel_with_apply_model(dataset, tiny_sd_dir, tiny_config):
    model = ff.FASegModel(model_path=str(tiny_sd_dir), classes=["cat", "dog", "bird"], config=tiny_config)
    view = dataset.match(fo.ViewField("filepath").ends_with(".png")).exists("filepath").limit(3)
    view = view.match(fo.ViewField("filepath").re_match(".*img.*"))
    view.apply_model(model, label_field="am", batch_size=1)
    assert dataset.count("am") == 3 and model.mask_targets == {1: "cat", 2: "dog", 3: "bird"}
    sample = dataset.exists("am").first()
    (expected,) = model.segmenter(sample.filepath, ["cat", "dog", "bird"], config=model.run_config)
    assert model.segmenter.config.image_size == 512 and model.run_config.image_size == 128  # never changed
    assert np.array_equal(sample.am.mask, expected.label_map)


def test_fasegmodel_per_sample_classes_from_a_field(dataset, tiny_sd_dir, tiny_config):
    view = dataset.match(fo.ViewField("filepath").re_match(".*img.*"))
    view.set_values("names", [["cat"], ["dog", "cat"], ["bird"], ["dog"]])
    model = ff.FASegModel(model_path=str(tiny_sd_dir), classes_field="names", config=tiny_config)
    view.apply_model(model, label_field="pf", batch_size=2)
    assert model.mask_targets == {1: "cat", 2: "dog", 3: "bird"}
    masks = [s.pf.mask for s in view]
    assert set(np.unique(masks[2])) <= {0, 3} and set(np.unique(masks[0])) <= {0, 1}


# ---------------------------------------------------------------- operator


def test_run_operator_immediate_and_delegated(dataset, tiny_sd_dir):
    params = dict(classes=["cat", "dog"], model_path=str(tiny_sd_dir), image_size=128, threshold=0.5,
                  batch_size=2, label_field="op", view_target="CURRENT_VIEW")
    view = dataset.limit(3)
    result = foo.execute_operator(RUN_URI, ctx=dict(dataset=dataset, view=view, params=params))
    assert result.error is None, result.error
    assert dataset.count("op") == 3 and dataset.mask_targets["op"] == {1: "cat", 2: "dog"}

    # selected samples, delegated: queued, then run as a `fiftyone delegated launch` worker does
    ids = dataset.skip(3).values("id")
    params = dict(params, label_field="op2", view_target="SELECTED_SAMPLES")
    foo.execute_operator(RUN_URI, ctx=dict(dataset=dataset, view=dataset.view(), selected=ids, params=params),
                         request_delegation=True)
    assert "op2" not in dataset.get_field_schema()  # queued, not run
    from fiftyone.operators.delegated import DelegatedOperationService

    DelegatedOperationService().execute_queued_operations(dataset_name=dataset.name)
    dataset.reload()
    assert dataset.count("op2") == 1 and dataset.exists("op2_error").count() == 2


def test_run_operator_sdk_call_matches(dataset, tiny_sd_dir, tiny_faseg):
    run_faseg = foo.get_operator(RUN_URI)
    view = dataset.limit(2)
    result = run_faseg(view, classes=["cat"], model_path=str(tiny_sd_dir), image_size=128, label_field="sdk")
    assert result.error is None, result.error
    ff.segment_samples(view, label_field="direct", classes=["cat"], segmenter=tiny_faseg)
    for sample in view:
        assert np.array_equal(sample.sdk.get_mask(), sample.direct.get_mask())


def test_fasegmodel_apply_model_with_output_dir(dataset, tiny_sd_dir, tiny_config, tmp_path):
    model = ff.FASegModel(model_path=str(tiny_sd_dir), classes=["cat", "dog"], config=tiny_config)
    view = dataset.match(fo.ViewField("filepath").re_match(".*img.*")).limit(2)
    view.apply_model(model, label_field="disk", batch_size=1, output_dir=str(tmp_path / "am"))
    for sample in view:
        assert sample.disk.mask is None and os.path.isfile(sample.disk.mask_path)
        (expected,) = model.segmenter(sample.filepath, ["cat", "dog"], config=model.run_config)
        assert np.array_equal(sample.disk.get_mask(), expected.label_map)


def test_plugin_registers_without_importing_torch():
    """The App loads operators at startup: importing them must not pull in torch or diffusers."""
    import subprocess
    import sys

    code = (
        "import sys, fiftyone.operators as foo\n"
        "ops = [o.uri for o in foo.list_operators() if o.plugin_name == '@faseg/fiftyone-faseg']\n"
        "print(sorted(ops))\n"
        "assert 'torch' not in sys.modules and 'diffusers' not in sys.modules, 'heavy import at registration'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy())
    assert out.returncode == 0, out.stderr[-2000:]
    assert "@faseg/fiftyone-faseg/run_faseg" in out.stdout and "@faseg/fiftyone-faseg/evaluate_faseg" in out.stdout


def test_overwrite_leaves_nothing_stale(dataset, tiny_faseg, tmp_path):
    """A run that replaces labels also replaces (or clears) everything an older run stored."""
    from fiftyone_faseg.analysis import iterate

    ff.segment_samples(dataset, classes=["cat", "dog"], segmenter=tiny_faseg, store_scores=True,
                       output_dir=str(tmp_path / "out"))
    assert dataset.count("faseg_scores") == 4
    victim = dataset.exists("faseg").first()
    os.remove(victim.filepath)  # this image becomes unreadable before the second run
    ff.segment_samples(dataset, classes=["bird"], segmenter=tiny_faseg, overwrite=True)
    assert dataset.count("faseg_scores") == 0  # no score files of the older run
    victim.reload()
    assert victim.faseg is None and victim.faseg_candidates is None and "does not exist" in victim.faseg_error
    with pytest.raises(ValueError, match="no stored scores"):
        iterate.rethreshold(dataset, "faseg", 0.3)


def test_rethreshold_never_writes_over_other_fields(dataset, tiny_faseg):
    from fiftyone_faseg.analysis import iterate

    view = dataset.match(fo.ViewField("filepath").re_match(".*img.*"))
    ff.segment_samples(view, classes=["cat", "dog"], segmenter=tiny_faseg, store_scores=True)
    view.set_values("ground_truth", [fo.Segmentation(mask=np.ones((4, 4), np.uint8))] * len(view))
    with pytest.raises(ValueError, match="not made by FA-Seg"):
        iterate.rethreshold(view, "faseg", 0.3, out_field="ground_truth", overwrite=True)
    assert all((s.ground_truth.mask == 1).all() for s in view)
    iterate.rethreshold(view, "faseg", 0.3, out_field="low")
    with pytest.raises(ValueError, match="pass overwrite=True"):
        iterate.rethreshold(view, "faseg", 0.4, out_field="low")
    iterate.rethreshold(view, "faseg", 0.4, out_field="low", overwrite=True)


@pytest.fixture(scope="module")
def proposer_dirs(tmp_path_factory):
    from faseg_core.testing.candidates import build_tiny_blip, build_tiny_clip

    return build_tiny_blip(tmp_path_factory.mktemp("blip")), build_tiny_clip(tmp_path_factory.mktemp("clip"))


def test_run_operator_with_captioner_and_tagger(dataset, tiny_sd_dir, proposer_dirs):
    """classes_from="tagger": BLIP captions + CLIP tags over a vocabulary, from local folders."""
    blip, clip = proposer_dirs
    view = dataset.match(fo.ViewField("filepath").re_match(".*img.*")).limit(2)
    vocab = ["cat", "dog", "bird", "person"]
    params = dict(classes=vocab, classes_from="tagger", model_path=str(tiny_sd_dir), image_size=128,
                  captioner_path=str(blip), tagger_model=str(clip), label_field="tag", view_target="CURRENT_VIEW")
    result = foo.execute_operator(RUN_URI, ctx=dict(dataset=dataset, view=view, params=params))
    assert result.error is None, result.error
    dataset.reload()
    assert dataset.mask_targets["tag"] == {1: "cat", 2: "dog", 3: "bird", 4: "person"}  # the whole vocabulary
    for sample in view:
        cands = sample.tag_candidates.classifications
        assert cands and {c.label for c in cands} <= set(vocab)
        assert all(c.source in ("caption", "tagger", "caption+tagger", "vocabulary") for c in cands)
        assert isinstance(sample.tag_caption, str) and sample.tag_caption
        values = set(np.unique(sample.tag.get_mask()).tolist()) - {0}
        assert values <= {k for k, n in dataset.mask_targets["tag"].items() if n in {c.label for c in cands}}

    # a caption for the reconstruction prompt with classes named by the user
    params = dict(params, classes_from="list", use_captioner=True, label_field="capt")
    result = foo.execute_operator(RUN_URI, ctx=dict(dataset=dataset, view=view, params=params))
    assert result.error is None, result.error
    dataset.reload()
    done = dataset.select(view.values("id"))
    assert all(s.capt_caption for s in done) and all(c.source == "user" for s in done for c in s.capt_candidates.classifications)

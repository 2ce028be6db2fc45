"""One bounded model cache (issue 18 case 18, issue 21 item 5) and FASegModel as a FiftyOne
model that keeps a field's pixel values (issue 18 case 9) and takes every FA-Seg setting
(issue 21 item 1)."""

import dataclasses
import os

import fiftyone as fo
import fiftyone.core.config as foc
import fiftyone.core.models as fom
import numpy as np
import pytest

import fiftyone_faseg as ff
from fiftyone_faseg.run import models
from images import write_image


@pytest.fixture
def fresh_cache():
    models.clear_cache()
    yield
    models.clear_cache()


@pytest.fixture
def dataset(tmp_path):
    ds = fo.Dataset()
    ds.add_samples([fo.Sample(filepath=write_image(tmp_path / ("%d.png" % i), 40 + 8 * i, 56, seed=i))
                    for i in range(4)])
    yield ds
    ds.delete()


# ---------------------------------------------------------------------- the cache


def test_cache_keeps_the_most_recently_used_models(tiny_sd_dir, fresh_cache, monkeypatch, tmp_path):
    monkeypatch.setenv("FASEG_MODEL_CACHE_SIZE", "2")
    a = models.load_segmenter(str(tiny_sd_dir), device="cpu")
    # one model per (checkpoint, device, dtype), however they are spelled
    assert models.load_segmenter(str(tiny_sd_dir) + os.sep, device="cpu", dtype="float32") is a
    (tmp_path / "link").symlink_to(tiny_sd_dir, target_is_directory=True)
    assert models.load_segmenter(str(tmp_path / "link"), device="cpu", dtype="auto") is a
    b = models.load_segmenter(str(tiny_sd_dir), device="cpu", dtype="bfloat16")
    assert b is not a and len(models.cached_models()) == 2
    assert models.load_segmenter(str(tiny_sd_dir), device="cpu") is a  # a is now the most recent
    c = models.load_segmenter(str(tiny_sd_dir), device="cpu", dtype="float16")
    assert [k[3] for k in models.cached_models()] == ["torch.float32", "torch.float16"]  # b, the least recent, left
    assert models.load_segmenter(str(tiny_sd_dir), device="cpu", dtype="float16") is c
    assert models.load_segmenter(str(tiny_sd_dir), device="cpu", dtype="bfloat16") is not b  # loaded again


def test_an_evicted_model_still_serves_the_call_holding_it(tiny_sd_dir, tiny_config, fresh_cache, monkeypatch,
                                                           dataset):
    monkeypatch.setenv("FASEG_MODEL_CACHE_SIZE", "1")
    image = dataset.first().filepath
    held = models.load_segmenter(str(tiny_sd_dir), device="cpu")
    (before,) = held(image, ["cat", "dog"], config=tiny_config)
    other = models.load_segmenter(str(tiny_sd_dir), device="cpu", dtype="bfloat16")  # evicts `held`
    assert models.cached_models() == [("faseg", os.path.realpath(tiny_sd_dir), "cpu", "torch.bfloat16")]
    (after,) = held(image, ["cat", "dog"], config=tiny_config)
    assert np.array_equal(before.label_map, after.label_map) and np.array_equal(before.scores, after.scores)
    assert held.unet.dtype == held.dtype and other.dtype != held.dtype


def test_cache_size_setting_is_checked(monkeypatch, fresh_cache):
    monkeypatch.delenv("FASEG_MODEL_CACHE_SIZE", raising=False)
    monkeypatch.setattr(fo.app_config, "plugins", {})
    assert models.cache_size() == models.DEFAULT_CACHE_SIZE == 2
    monkeypatch.setattr(fo.app_config, "plugins", {"@faseg/fiftyone-faseg": {"model_cache_size": 3}})
    assert models.cache_size() == 3
    from fiftyone_faseg import limits

    # the plugin's fiftyone.yml declares the default, below the environment and the App config
    assert limits._plugin_file_settings()["model_cache_size"] == models.DEFAULT_CACHE_SIZE
    monkeypatch.setattr(fo.app_config, "plugins", {})
    monkeypatch.setattr(limits, "_plugin_file_settings", lambda: {"model_cache_size": 5})
    assert models.cache_size() == 5
    for bad in ("0", "two", "-1", "1.5"):
        monkeypatch.setenv("FASEG_MODEL_CACHE_SIZE", bad)
        with pytest.raises(ValueError, match="FASEG_MODEL_CACHE_SIZE .* whole number >= 1"):
            models.cache_size()


# ---------------------------------------------------------------------- FASegModel


def test_fasegmodel_takes_every_fa_seg_setting():
    from faseg_core.config import FASegConfig

    defaults = FASegConfig()
    for f in dataclasses.fields(FASegConfig):  # each knob of FA-Seg is a keyword of the model
        model = ff.FASegModel(classes=["cat"], **{f.name: getattr(defaults, f.name)})
        assert getattr(model.config, f.name) == getattr(defaults, f.name)
    model = ff.FASegModel(classes=["cat"], pamr=True, image_size=128, threshold=0.3, flip=False)
    config = model.config.run_config()
    moved = FASegConfig().at_image_size(128)
    assert (config.pamr, config.threshold, config.flip, config.image_size) == (True, 0.3, False, 128)
    assert config.cross_weights == moved.cross_weights  # an image size moves the grids, as a run does
    with pytest.raises(TypeError, match=r"unknown FASegModel settings \['colour'\]"):
        ff.FASegModel(classes=["cat"], colour="red")
    with pytest.raises(ValueError, match="threshold"):
        ff.FASegModel(classes=["cat"], threshold=2)  # refused when built, not at the first batch
    # the run settings the model shares with segment_samples are FA-Seg's or the model's own
    from fiftyone_faseg.run.model import MODEL_SETTINGS

    assert set(MODEL_SETTINGS) <= set(ff.RunSettings.fields())
    shared = set(ff.RunSettings.fields()) & set(ff.FASegModelConfig.settings())
    assert {"threshold", "batch_size", "image_size", "pamr", "model_path", "classes", "label_field"} <= shared


def test_fasegmodel_is_a_fiftyone_model_config(tiny_sd_dir):
    model = fom.load_model({"type": "fiftyone_faseg.run.model.FASegModel",
                            "config": {"model_path": str(tiny_sd_dir), "classes": ["cat"], "image_size": 128,
                                       "pamr": True, "device": "cpu"}})
    assert isinstance(model, ff.FASegModel) and isinstance(model.config, foc.Config)
    assert model.run_config.image_size == 128 and model.run_config.pamr
    d = model.config.serialize()
    assert d["pamr"] is True and ff.FASegModelConfig(d).overrides() == model.config.overrides()


def test_fasegmodel_pamr_matches_the_segmenter(dataset, tiny_sd_dir, tiny_config):
    model = ff.FASegModel(model_path=str(tiny_sd_dir), classes=["cat", "dog"], config=tiny_config, pamr=True,
                          device="cpu")
    view = dataset.limit(2)
    view.apply_model(model, label_field="pm", batch_size=1)
    ids = {n: v for v, n in model.mask_targets.items()}
    for sample in view:
        (expected,) = model.segmenter(sample.filepath, ["cat", "dog"], config=tiny_config.replace(pamr=True))
        lut = np.array([0] + [ids[n] for n in expected.classes])
        assert np.array_equal(sample.pm.mask, lut[expected.label_map])


def test_apply_model_keeps_the_fields_pixel_values(dataset, tiny_sd_dir, tiny_config, tiny_faseg):
    """Case 9: apply_model on one sample, then the README's
    ``dataset.mask_targets[f] = model.mask_targets``: the others keep their meaning."""
    ff.segment_samples(dataset, classes=["dog", "cat"], segmenter=tiny_faseg, label_field="f")
    assert dataset.mask_targets["f"] == {1: "dog", 2: "cat"}
    untouched = {s.id: s.f.get_mask() for s in dataset.skip(1)}
    model = ff.FASegModel(model_path=str(tiny_sd_dir), classes=["cat", "dog", "bird"], config=tiny_config,
                          label_field="f", device="cpu")
    one = dataset.limit(1)
    one.apply_model(model, label_field="f")
    dataset.mask_targets["f"] = model.mask_targets  # the README's route
    dataset.save()
    dataset.reload()
    # cat and dog keep their values; the new class takes the next free one
    assert dataset.mask_targets["f"] == {1: "dog", 2: "cat", 3: "bird"} == model.mask_targets
    for sample in dataset.skip(1):
        assert np.array_equal(sample.f.get_mask(), untouched[sample.id])
    sample = one.first()
    (expected,) = model.segmenter(sample.filepath, ["cat", "dog", "bird"], config=tiny_config)
    lut = np.array([0] + [{"dog": 1, "cat": 2, "bird": 3}[n] for n in expected.classes])
    assert np.array_equal(sample.f.get_mask(), lut[expected.label_map])


def test_apply_model_without_label_field_says_how_to_keep_values(dataset, tiny_sd_dir, tiny_config, caplog):
    """Without ``label_field`` the model cannot know the field's values: it says so once, with what to pass."""
    model = ff.FASegModel(model_path=str(tiny_sd_dir), classes=["cat", "dog"], config=tiny_config, device="cpu")
    with caplog.at_level("WARNING", logger="fiftyone_faseg.run.model"):
        dataset.limit(2).apply_model(model, label_field="g", batch_size=1)
    warnings = [r.getMessage() for r in caplog.records if r.name == "fiftyone_faseg.run.model"]
    assert len(warnings) == 1 and "label_field=" in warnings[0]

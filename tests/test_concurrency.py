"""Runs in one process share nothing mutable: settings travel with each call, a model is
loaded once and never changed, and two runs at once (two immediate operators in one App
server) each get exactly what they would get alone."""

import threading

import fiftyone as fo
import numpy as np
import pytest
from PIL import Image

import fiftyone_faseg as ff
from fiftyone_faseg.run import models
from fiftyone_faseg.run.plan import run_config
from fiftyone_faseg.run.settings import RunSettings


@pytest.fixture
def dataset(tmp_path):
    ds = fo.Dataset()
    for i in range(4):
        rng = np.random.RandomState(i)
        img = np.full((36, 44, 3), rng.randint(0, 255, 3), np.uint8)
        img[8:20, 10:] = rng.randint(0, 255, 3)
        Image.fromarray(img).save(tmp_path / ("%d.png" % i))
        ds.add_sample(fo.Sample(filepath=str(tmp_path / ("%d.png" % i))))
    yield ds
    ds.delete()


def test_two_runs_at_once_from_a_cold_cache_get_their_own_settings(dataset, tiny_sd_dir):
    models.clear_cache()
    runs = {"low": dict(threshold=0.2, classes=["cat", "dog"]), "high": dict(threshold=0.7, classes=["dog", "sofa"])}
    errors = []

    def run(field, kwargs):
        try:
            ff.segment_samples(dataset, label_field=field, model_path=str(tiny_sd_dir), image_size=128,
                               batch_size=2, device="cpu", **kwargs)
        except Exception as e:  # reported below, with the other thread's outcome
            errors.append(e)

    threads = [threading.Thread(target=run, args=item) for item in runs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    seg = models.load_segmenter(str(tiny_sd_dir), device="cpu")
    assert len(models._CACHE) == 1  # one load, shared
    assert seg.config.threshold == 0.55 and seg.config.image_size == 512  # never changed by a run
    dataset.reload()
    for field, kwargs in runs.items():
        config = run_config(RunSettings.from_kwargs(image_size=128, threshold=kwargs["threshold"], batch_size=2))
        ids = {n: v for v, n in dataset.mask_targets[field].items()}
        for sample in dataset:
            (alone,) = seg(sample.filepath, kwargs["classes"], config=config)
            lut = np.array([0] + [ids[n] for n in alone.classes])
            assert np.array_equal(sample[field].get_mask(), lut[alone.label_map])
    models.clear_cache()


def test_a_run_leaves_no_settings_behind(dataset, tiny_faseg, tiny_sd_dir):
    before = tiny_faseg.config
    ff.segment_samples(dataset, classes=["cat"], segmenter=tiny_faseg, threshold=0.1, batch_size=3)
    assert tiny_faseg.config is before
    model = ff.FASegModel(model_path=str(tiny_sd_dir), classes=["cat"])
    assert model.config.threshold is None and model.run_config.threshold == model.segmenter.config.threshold


def test_progress_callbacks_count_every_sample(dataset, tiny_faseg):
    from fiftyone_faseg.analysis import iterate

    calls = []
    ff.segment_samples(dataset, classes=["cat"], segmenter=tiny_faseg, batch_size=3, store_scores=True,
                       progress=lambda done, total: calls.append((done, total)))
    assert calls == [(3, 4), (4, 4)]
    calls.clear()
    iterate.rethreshold(dataset, "faseg", 0.4, out_field="re", progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (4, 4) and all(t == 4 for _, t in calls)

"""The Ray backend (fiftyone_faseg.distributed.engine) on a local Ray: 2 CPUs, no GPU, tiny model.

One Ray per module. Ray workers run torch with one thread (Ray's OMP_NUM_THREADS=1 for
one-CPU actors), and the tiny random model's scores move with the thread count, so the
local runs compared against them use one thread too; both sides use the same batches
(block_rows a multiple of batch_size), as batched convolutions round differently.
"""

import copy
import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

import fiftyone as fo
import fiftyone.operators as foo
import numpy as np
import pytest
from PIL import Image

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # a local Ray and a pool of actors per run

import fiftyone_faseg as ff  # noqa: E402
from faseg_core import FASeg  # noqa: E402
from fiftyone_faseg.distributed import engine as distributed  # noqa: E402
from fiftyone_faseg.distributed.engine import RayOptions, segment_samples_on_ray  # noqa: E402

RUN_URI = "@faseg/fiftyone-faseg/run_faseg"
VOC_CLASSES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor"]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    # the segmenter subclass below travels to the actors by value (workers cannot import tests/)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20, log_to_driver=False)
    yield
    ray.shutdown()


@contextmanager
def one_thread():
    """Torch with one thread, as in the Ray actors."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def write_image(path, h, w, seed):
    rng = np.random.RandomState(seed)
    img = np.full((h, w, 3), rng.randint(0, 255, 3), np.uint8)
    img[h // 4 : h // 2, w // 3 :] = rng.randint(0, 255, 3)
    img[h // 2 :, : w // 2] = rng.randint(0, 255, 3)
    Image.fromarray(img).save(path)
    return str(path)


@pytest.fixture
def images(tmp_path):
    """10 generated images, an unreadable file and a missing one."""
    ds = fo.Dataset()
    paths = [write_image(tmp_path / f"img{i}.png", 40 + 4 * i, 60, seed=i) for i in range(10)]
    (tmp_path / "text.jpg").write_text("not an image")
    paths += [str(tmp_path / "text.jpg"), str(tmp_path / "missing.png")]
    ds.add_samples([fo.Sample(filepath=p) for p in paths])
    yield ds
    ds.delete()


def run_kwargs(tiny_sd_dir, **kwargs):
    return dict(classes=["cat", "dog"], model_path=str(tiny_sd_dir), image_size=128, batch_size=2, **kwargs)


def assert_same_results(ds, local, remote):
    assert ds.mask_targets[local] == ds.mask_targets[remote]
    compared = 0
    for sample in ds.select_fields([local, remote, local + "_error", remote + "_error",
                                    local + "_candidates", remote + "_candidates"]):
        assert sample[local + "_error"] == sample[remote + "_error"]
        if sample[local] is None:
            assert sample[remote] is None
            continue
        assert np.array_equal(sample[local].get_mask(), sample[remote].get_mask()), sample.filepath
        assert candidates(sample[local + "_candidates"]) == candidates(sample[remote + "_candidates"])
        compared += 1
    return compared


def candidates(labels):
    return [(c.label, c.confidence, c.source) for c in labels.classifications]


def mask_files(folder):
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_generated_images_equal_local_run_and_bad_images_are_errors(images, tiny_sd_dir, tmp_path):
    kwargs = run_kwargs(tiny_sd_dir, output_dir=str(tmp_path / "masks"))
    with one_thread():
        ff.segment_samples(images, label_field="local", **kwargs)
    seen = []
    summary = segment_samples_on_ray(images, options=RayOptions(concurrency=2, block_rows=4),
                                     progress=lambda d, t: seen.append((d, t)), **kwargs)

    assert len(summary.processed) == 10 and len(summary.skipped) == 0
    assert sorted(os.path.basename(images[i].filepath) for i in summary.failed) == ["missing.png", "text.jpg"]
    assert seen[-1] == (12, 12) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert assert_same_results(images, "local", "faseg") == 10

    # the workers wrote the masks under the run's root, one per good sample, no temporary file left
    root = Path(summary.root)
    assert sorted(mask_files(root / "faseg")) == sorted(i + ".png" for i in images.exists("faseg").values("id"))
    for sample in images.exists("faseg"):
        assert sample.faseg.mask is None and Path(sample.faseg.mask_path).parent == root / "faseg"
        assert sample.faseg_error is None
    errors = images.exists("faseg_error")
    assert errors.count() == 2
    assert "not a readable image" in errors.match(fo.ViewField("filepath").ends_with("text.jpg")).first().faseg_error
    assert "does not exist" in errors.match(fo.ViewField("filepath").ends_with("missing.png")).first().faseg_error


@pytest.fixture
def voc(shared_dir, tmp_path):
    folder = shared_dir / "data" / "voc-sample"
    if not folder.is_dir():
        pytest.skip("../shared/data/voc-sample is absent")
    ds = fo.Dataset()
    samples = []
    for path in sorted((folder / "SegmentationClass").glob("*.png")):
        gt_path = tmp_path / path.name  # grayscale: FiftyOne would read the palette PNG as RGB
        Image.fromarray(np.array(Image.open(path))).save(gt_path)
        samples.append(fo.Sample(filepath=str(folder / "JPEGImages" / (path.stem + ".jpg")),
                                 ground_truth=fo.Segmentation(mask_path=str(gt_path))))
    ds.add_samples(samples)
    ds.mask_targets = {"ground_truth": dict(enumerate(VOC_CLASSES))}
    ds.save()
    yield ds
    ds.delete()


def test_voc_sample_equal_local_run_masks_travel_back(voc, tiny_sd_dir):
    # each sample's classes come from its ground truth (per-sample rows); no output_dir:
    # the masks come back to the driver and are stored in the database
    kwargs = dict(classes_from="gt_field", gt_field="ground_truth", model_path=str(tiny_sd_dir), image_size=128,
                  batch_size=1)
    with one_thread():
        ff.segment_samples(voc, label_field="local", **kwargs)
    summary = segment_samples_on_ray(voc, options=RayOptions(concurrency=2, block_rows=3), **kwargs)

    assert len(summary.processed) == 14 and not summary.failed
    assert assert_same_results(voc, "local", "faseg") == 14
    sample = voc.first()
    assert sample.faseg.mask is not None and sample.faseg.mask.shape == (513, 513)
    present = {VOC_CLASSES[v] for v in np.unique(sample.ground_truth.get_mask()) if 0 < v < 255}
    assert {c.label for c in sample.faseg_candidates.classifications} == present


class KillingFASeg(FASeg):
    """A segmenter whose actor kills its own process (SIGKILL) on its second call; the
    first actor to get there does, once per run (a marker file holds its pid)."""

    def __call__(self, *args, **kwargs):
        if os.getpid() != self.driver_pid:
            self.calls = getattr(self, "calls", 0) + 1
            if self.calls == 2:
                try:
                    fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    pass
                else:
                    os.write(fd, str(os.getpid()).encode())
                    os.close(fd)
                    os.kill(os.getpid(), signal.SIGKILL)
        return super().__call__(*args, **kwargs)


def test_killed_actor_is_restarted_and_every_sample_has_one_mask(images, tiny_faseg, tmp_path):
    seg = copy.copy(tiny_faseg)
    seg.__class__ = KillingFASeg
    seg.driver_pid, seg.marker = os.getpid(), str(tmp_path / "killed")
    kwargs = dict(classes=["cat", "dog"], image_size=128, batch_size=1, output_dir=str(tmp_path / "masks"))
    with one_thread():
        ff.segment_samples(images, label_field="local", segmenter=tiny_faseg, **kwargs)

    summary = segment_samples_on_ray(images, options=RayOptions(concurrency=2, block_rows=3), segmenter=seg, **kwargs)

    killed = int(Path(seg.marker).read_text())
    assert killed != os.getpid()
    with pytest.raises(ProcessLookupError):
        os.kill(killed, 0)  # the actor's process is gone: its block was done again elsewhere
    assert len(summary.processed) == 10 and len(summary.failed) == 2  # each sample written once
    written = images.exists("faseg").values("id")
    assert sorted(mask_files(Path(summary.root) / "faseg")) == sorted(i + ".png" for i in written)
    assert images.count("faseg") == 10
    assert assert_same_results(images, "local", "faseg") == 10


def test_interrupted_run_resumes_with_skip_existing_from_the_app(images, tiny_sd_dir, tmp_path):
    class Stop(Exception):
        pass

    def stop(done, total):
        raise Stop()  # the driver dies after its first write

    kwargs = run_kwargs(tiny_sd_dir, output_dir=str(tmp_path / "masks"))
    with pytest.raises(Stop):
        segment_samples_on_ray(images, options=RayOptions(concurrency=1, block_rows=4), progress=stop, **kwargs)
    first = {s.id: os.stat(s.faseg.mask_path).st_mtime_ns for s in images.exists("faseg")}
    assert 0 < len(first) < 10

    # run_faseg's "Ray cluster address" option: the rest, on the cluster this process is connected to
    address = ray.get_runtime_context().gcs_address
    params = dict(kwargs, classes_from="list", output_dir=dict(absolute_path=kwargs["output_dir"]),
                  skip_existing=True, ray_address=address, view_target="DATASET")
    result = foo.execute_operator(RUN_URI, ctx=dict(dataset=images, view=images.view(), params=params))
    assert result.error is None, result.error
    images.reload()
    assert images.count("faseg") == 10 and images.exists("faseg_error").count() == 2
    assert {s.id: os.stat(s.faseg.mask_path).st_mtime_ns for s in images.select(list(first))} == first


def test_cli_refuses_a_model_that_does_not_load_before_any_write(images, tmp_path):
    empty = tmp_path / "not-a-checkpoint"  # the layout of a checkpoint, with nothing in it
    for part in ("unet", "vae", "text_encoder", "tokenizer"):
        (empty / part).mkdir(parents=True)
    with pytest.raises(ValueError, match="does not load .* on the Ray workers, so nothing was written"):
        distributed.main([images.name, "--classes", "cat", "dog", "--model-path", str(empty), "--image-size", "128"])
    assert "faseg" not in images.get_field_schema() and "faseg" not in images.mask_targets


def test_more_gpus_than_the_cluster_has_is_refused_before_any_write(images, tiny_sd_dir):
    with pytest.raises(ValueError, match="`num_gpus` is 1 per actor and the Ray cluster has 0 GPUs"):
        segment_samples_on_ray(images, classes=["cat"], model_path=str(tiny_sd_dir), options=RayOptions(num_gpus=1))
    assert "faseg" not in images.get_field_schema() and "faseg" not in images.mask_targets

"""How a Ray run streams (fiftyone_faseg.distributed.engine), on a local Ray with the stub segmenter.

The model is not under test here (tests/test_ray.py runs the tiny model): each model
call is one full batch, the driver reads at most ``blocks_in_flight`` blocks ahead of
what it has written, results equal a local run, and the summary keeps counts, not ids.
"""

import os
import sys

import fiftyone as fo
import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # a local Ray and a pool of actors per run

import fiftyone_faseg as ff  # noqa: E402
import stubs  # noqa: E402
from fiftyone_faseg.run import outputs  # noqa: E402
from fiftyone_faseg.distributed.engine import RayOptions, segment_samples_on_ray  # noqa: E402
from images import write_image  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    # the stub segmenters travel to the actors by value (workers cannot import tests/)
    ray.cloudpickle.register_pickle_by_value(stubs)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=128 * 2**20, log_to_driver=False)
    yield
    ray.shutdown()


class CountingStub(stubs.StubSegmenter):
    """The stub, writing one file per call (in the actors) named after the number of images."""

    def __call__(self, images, classes, captions=None, config=None, progress=False):
        results = super().__call__(images, classes, captions, config=config)
        if os.getpid() != self.driver_pid:
            self.calls = getattr(self, "calls", 0) + 1
            open(os.path.join(self.folder, "%d-%d-%d" % (os.getpid(), self.calls, len(results))), "w").close()
        return results


@pytest.fixture
def images(tmp_path):
    ds = fo.Dataset()
    ds.add_samples([fo.Sample(filepath=write_image(tmp_path / f"{i}.png", 30 + i, 40, seed=i)) for i in range(16)])
    yield ds
    ds.delete()


def test_every_model_call_is_one_full_batch_and_results_equal_a_local_run(images, stub_faseg, tmp_path):
    seg = CountingStub(stub_faseg.tokenizer, stub_faseg.config)
    seg.driver_pid, seg.folder = os.getpid(), str(tmp_path / "calls")
    os.mkdir(seg.folder)
    kwargs = dict(classes=["cat", "dog"], batch_size=4)
    ff.segment_samples(images, label_field="local", segmenter=stub_faseg, **kwargs)

    summary = segment_samples_on_ray(images, segmenter=seg, options=RayOptions(concurrency=2, block_rows=8), **kwargs)

    sizes = sorted(int(name.rsplit("-", 1)[1]) for name in os.listdir(seg.folder))
    assert sizes == [4, 4, 4, 4]  # 16 rows in blocks of 8: four calls of the model's batch size
    assert len(summary.processed) == 16 and not summary.failed
    assert images.mask_targets["faseg"] == images.mask_targets["local"]
    for sample in images:
        assert np.array_equal(sample.faseg.get_mask(), sample.local.get_mask())  # travelled back as arrays
        assert [c.label for c in sample.faseg_candidates.classifications] == ["cat", "dog"]

    with pytest.raises(ValueError, match=r"`block_rows` \(6\) must be a multiple of the batch size \(4\)"):
        segment_samples_on_ray(images, label_field="other", segmenter=seg, options=RayOptions(block_rows=6), **kwargs)
    assert "other" not in images.get_field_schema() and "other" not in images.mask_targets


def test_the_driver_reads_at_most_blocks_in_flight_ahead_of_its_writes(images, stub_faseg, tmp_path, monkeypatch):
    read = []
    iter_rows = outputs.iter_rows

    def counted(*args, **kwargs):
        for rows in iter_rows(*args, **kwargs):
            read.append(len(rows))
            yield rows

    monkeypatch.setattr(outputs, "iter_rows", counted)
    seen = []
    options = RayOptions(concurrency=1, block_rows=2, blocks_in_flight=2)
    summary = segment_samples_on_ray(images, classes=["cat"], segmenter=stub_faseg, batch_size=2,
                                     output_dir=str(tmp_path / "masks"), options=options,
                                     progress=lambda done, total: seen.append((done, len(read))))

    assert seen[-1] == (16, 8) and len(read) == 8
    for done, blocks_read in seen:
        # the block being read, plus at most 2 read and not yet written
        assert blocks_read <= done // 2 + 2 + 1, seen
    assert seen[0][1] < 8  # the first block was written before the last was read
    assert len(summary.processed) == 16 and repr(summary.processed) == "Tally(16)"
    with pytest.raises(TypeError, match="query the dataset"):
        list(summary.processed)
    # the actors wrote the masks; the driver recorded their paths
    assert all(os.path.isfile(p) for p in images.values("faseg.mask_path"))
    assert images.count("faseg") == 16 and all(m is None for m in images.values("faseg.mask"))


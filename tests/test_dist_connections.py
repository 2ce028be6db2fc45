"""A Ray run connects for itself (issue 18, case 16): it never silently uses a cluster
another run, or the process's user, connected to."""

import os

import fiftyone as fo
import pytest

ray = pytest.importorskip("ray")

import stubs  # noqa: E402
from fiftyone_faseg.distributed import engine as distributed  # noqa: E402
from fiftyone_faseg.distributed.engine import RayOptions, ray_connection, segment_samples_on_ray  # noqa: E402
from images import write_image  # noqa: E402


@pytest.fixture(autouse=True)
def not_connected():
    if ray.is_initialized():
        pytest.skip("this process is connected to Ray (another test module's)")
    yield
    assert distributed._held["runs"] == 0


@pytest.fixture
def images(tmp_path):
    ds = fo.Dataset()
    ds.add_samples([fo.Sample(filepath=write_image(tmp_path / f"{i}.png", seed=i)) for i in range(3)])
    yield ds
    ds.delete()


def test_runs_share_a_connection_only_for_the_same_address():
    with ray_connection("10.0.0.1:6379"):
        with pytest.raises(ValueError, match="connected to the Ray cluster at '10.0.0.1:6379' for another FA-Seg run, "
                                             "and this run asks for '10.0.0.2:6379'"):
            with ray_connection("10.0.0.2:6379"):
                pass
        with pytest.raises(ValueError, match="asks for a local Ray"):
            with ray_connection(None):
                pass
        with ray_connection("10.0.0.1:6379"):
            assert distributed._held["runs"] == 2
        assert distributed._held["runs"] == 1
    assert distributed._held == {"address": None, "runs": 0, "opened": False}


def test_a_process_connected_elsewhere_is_refused_naming_both(images, stub_faseg):
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        current = ray.get_runtime_context().gcs_address
        with pytest.raises(ValueError, match="already connected to the Ray cluster at %s, and this run asks for "
                                             "'10.0.0.2:6379'" % current):
            segment_samples_on_ray(images, classes=["cat"], segmenter=stub_faseg,
                                   options=RayOptions(address="10.0.0.2:6379"))
        assert "faseg" not in images.get_field_schema() and "faseg" not in images.mask_targets
        # the connected cluster's own address (or None) is that cluster: accepted, and left connected
        summary = segment_samples_on_ray(images.limit(0), classes=["cat"], segmenter=stub_faseg,
                                         options=RayOptions(address=current))
        assert len(summary.processed) == 0 and ray.is_initialized()
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_a_run_with_an_address_connects_for_that_run_only(images, stub_faseg, tmp_path):
    ray.cloudpickle.register_pickle_by_value(stubs)
    summary = segment_samples_on_ray(images, classes=["cat"], segmenter=stub_faseg, output_dir=str(tmp_path / "m"),
                                     options=RayOptions(address="local", concurrency=1))
    assert len(summary.processed) == 3 and images.count("faseg") == 3
    assert all(os.path.isfile(p) for p in images.values("faseg.mask_path"))
    # disconnected: a later run asking for another address connects there, never here
    assert not ray.is_initialized()


def test_options_are_checked_when_made():
    for bad in (dict(concurrency=0), dict(block_rows=2.5), dict(blocks_in_flight=True), dict(num_gpus=-1),
                dict(max_task_retries=-1), dict(address=" ")):
        with pytest.raises(ValueError):
            RayOptions(**bad)

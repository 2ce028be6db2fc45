"""Shared test setup.

FiftyOne reads its configuration when first imported, so the environment is set here,
before any test module imports it: a private database directory for this test session
(the real embedded MongoDB, never a mock), no tracking, no version nagging.
"""

import atexit
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

_DB_DIR = tempfile.mkdtemp(prefix="faseg-test-db-")
os.environ.setdefault("FIFTYONE_DATABASE_DIR", _DB_DIR)


def _start_session_database():
    """This test session's own ``mongod`` (FiftyOne's bundled binary) on a free loopback port,
    stopped when the session ends: FiftyOne would otherwise attach to any database service
    already running on the machine, and a concurrent session ending could stop a shared one.
    Subprocesses of the tests inherit its address."""
    if os.environ.get("FIFTYONE_DATABASE_URI"):
        return  # given by the caller, or by the session that started these workers
    import importlib.util

    spec = importlib.util.find_spec("fiftyone")  # found, not imported: FiftyOne reads its config on import
    mongod = Path(spec.submodule_search_locations[0]) / "db" / "bin" / "mongod" if spec else None
    if mongod is None or not mongod.is_file():
        return  # FiftyOne's own service then
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(mongod), "--dbpath", _DB_DIR, "--port", str(port), "--bind_ip", "127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    atexit.register(lambda: (proc.terminate(), proc.wait(30)))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                os.environ["FIFTYONE_DATABASE_URI"] = "mongodb://127.0.0.1:%d" % port
                return
        if proc.poll() is not None:
            raise RuntimeError("the test database (%s) exited with code %s" % (mongod, proc.returncode))
        time.sleep(0.05)
    raise RuntimeError("the test database (%s) did not start within 60 s" % mongod)

os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
ROOT = Path(__file__).resolve().parents[1]
# FiftyOne finds plugins in the folders below FIFTYONE_PLUGINS_DIR: give it one that
# holds only this repository (a link), so the plugin under test is the working tree.
_PLUGINS_DIR = Path(tempfile.mkdtemp(prefix="faseg-test-plugins-"))
(_PLUGINS_DIR / "fiftyone-faseg").symlink_to(ROOT, target_is_directory=True)
os.environ.setdefault("FIFTYONE_PLUGINS_DIR", str(_PLUGINS_DIR))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The App's limits (fiftyone_faseg.limits): tests load tiny checkpoints from, and write
# masks to, temporary folders, so this test "server" allows them there
os.environ.setdefault("FASEG_MODEL_ROOTS", tempfile.gettempdir())
os.environ.setdefault("FASEG_OUTPUT_ROOTS", tempfile.gettempdir())
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
_start_session_database()

import pytest  # noqa: E402

# FASEG_SHARED points elsewhere when the checkout is not beside ../shared (e.g. a worktree)
SHARED = Path(os.environ.get("FASEG_SHARED") or ROOT.parent / "shared")


@pytest.fixture(scope="session")
def shared_dir():
    """`../shared` beside the checkout; tests that need it skip cleanly without it."""
    if not SHARED.is_dir():
        pytest.skip("../shared is absent")
    return SHARED


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory):
    """A tiny random SD-1.5-shaped checkpoint (unet, vae, text_encoder, real CLIP tokenizer) on disk."""
    from faseg_core.testing import save_diffusion_checkpoint

    return save_diffusion_checkpoint(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(scope="session")
def tiny_config():
    """The paper's settings moved to 128 px images (grids 16/8/4/2): fast on a CPU."""
    from faseg_core import FASegConfig

    return FASegConfig().at_image_size(128)


@pytest.fixture(scope="session")
def tiny_faseg(tiny_sd_dir, tiny_config):
    """`FASeg` loaded through `from_pretrained` from the tiny checkpoint, on the CPU."""
    from faseg_core import FASeg

    return FASeg.from_pretrained(tiny_sd_dir, config=tiny_config, device="cpu")


@pytest.fixture(scope="session")
def stub_faseg(tiny_sd_dir, tiny_config):
    """A :class:`stubs.StubSegmenter` (FASeg's interface, deterministic results, no UNet) at
    128 px, for tests where the model is not under test."""
    from stubs import StubSegmenter

    return StubSegmenter.from_checkpoint(tiny_sd_dir, tiny_config)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` skip where CUDA is absent (every CI machine): they are the checks
    a lent GPU runs (``pytest -m gpu``)."""
    gpu = [item for item in items if "gpu" in item.keywords]
    if not gpu:
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs CUDA")
        for item in gpu:
            item.add_marker(skip)

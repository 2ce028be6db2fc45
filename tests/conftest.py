"""Shared test setup.

FiftyOne reads its configuration when first imported, so the environment is set here,
before any test module imports it: a private database directory for this test session
(the real embedded MongoDB, never a mock), no tracking, no version nagging.
"""

import os
import tempfile
from pathlib import Path

_DB_DIR = tempfile.mkdtemp(prefix="faseg-test-db-")
os.environ.setdefault("FIFTYONE_DATABASE_DIR", _DB_DIR)
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
ROOT = Path(__file__).resolve().parents[1]
# FiftyOne finds plugins in the folders below FIFTYONE_PLUGINS_DIR: give it one that
# holds only this repository (a link), so the plugin under test is the working tree.
_PLUGINS_DIR = Path(tempfile.mkdtemp(prefix="faseg-test-plugins-"))
(_PLUGINS_DIR / "fiftyone-faseg").symlink_to(ROOT, target_is_directory=True)
os.environ.setdefault("FIFTYONE_PLUGINS_DIR", str(_PLUGINS_DIR))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir():
    """`../shared` beside the checkout; tests that need it skip cleanly without it."""
    if not SHARED.is_dir():
        pytest.skip("../shared is absent")
    return SHARED

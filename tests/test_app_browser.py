"""The FiftyOne App, in a real headless Chromium, shows a dataset with ground truth,
FA-Seg masks and an FA-Seg evaluation.

Skips cleanly without Chromium (``apt-get install -y chromium``) or playwright
(``pip install playwright``; its own browser download is not used): ``make browser``.
"""

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
N = 4

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make browser)")
from browser_support import CHROMIUM, app_server as _server, browser_page, graphql, gt_dataset, wait_for_grid  # noqa: E402,E501

if CHROMIUM is None:
    pytest.skip("Chromium is not installed (apt-get install -y chromium, or make browser)", allow_module_level=True)

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import fiftyone_faseg as ff  # noqa: E402
from fiftyone_faseg.evaluation import evaluate_faseg  # noqa: E402


@pytest.fixture(scope="module")
def app_dataset(tmp_path_factory, tiny_faseg):
    ds = gt_dataset(tmp_path_factory.mktemp("app-images"), "faseg-app-%d" % os.getpid(), N)
    ff.segment_samples(ds, classes=["cat", "dog"], segmenter=tiny_faseg, threshold=0.3)
    evaluate_faseg(ds, "faseg", gt_field="ground_truth", eval_key="faseg_eval")
    yield ds
    ds.delete()


@pytest.fixture(scope="module")
def app_server(app_dataset, tmp_path_factory):
    with _server(tmp_path_factory.mktemp("app-server")) as port:
        yield port


def test_graphql_sees_dataset_fields_and_evaluation(app_dataset, app_server):
    data = graphql(app_server, '{ dataset(name: "%s") { name estimatedSampleCount evaluations { key } } }'
                    % app_dataset.name)
    assert "errors" not in data, data
    dataset = data["data"]["dataset"]
    assert dataset["estimatedSampleCount"] == N
    assert "faseg_eval" in [e["key"] for e in dataset["evaluations"]]


def test_app_shows_masks_and_evaluation_in_chromium(app_dataset, app_server, tmp_path):
    url = "http://127.0.0.1:%d/datasets/%s" % (app_server, app_dataset.name)
    with browser_page(tmp_path / "profile") as page:
        page.goto(url, wait_until="domcontentloaded", timeout=60000)
        wait_for_grid(page, N)
        sidebar = page.locator("body").inner_text()
        for name in ("ground_truth", "faseg", "faseg_candidates", "faseg_eval_miou"):
            assert name in sidebar, "field %s not in the sidebar" % name
        shot = tmp_path / "app.png"
        page.screenshot(path=str(shot), full_page=True)
    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape[0] >= 800 and image.std() > 10  # not blank
    out = ROOT / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, out / "app.png")

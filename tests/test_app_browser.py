"""The FiftyOne App, in a real headless Chromium, shows a dataset with ground truth,
FA-Seg masks and an FA-Seg evaluation.

Skips cleanly without Chromium (``apt-get install -y chromium``) or playwright
(``pip install playwright``; its own browser download is not used): ``make browser``.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = next((p for p in ("/usr/lib/chromium/chromium", shutil.which("chromium") or "") if p and os.path.isfile(p)),
                None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
N = 4

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make browser)")
if CHROMIUM is None:
    pytest.skip("Chromium is not installed (apt-get install -y chromium, or make browser)", allow_module_level=True)

import fiftyone as fo  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import fiftyone_faseg as ff  # noqa: E402
from fiftyone_faseg.evaluation import evaluate_faseg  # noqa: E402


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port, query):
    req = urllib.request.Request("http://127.0.0.1:%d/graphql" % port, data=json.dumps({"query": query}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def app_dataset(tmp_path_factory, tiny_faseg):
    folder = tmp_path_factory.mktemp("app-images")
    ds = fo.Dataset("faseg-app-%d" % os.getpid())
    samples = []
    for i in range(N):
        img = np.zeros((96, 128, 3), np.uint8)
        img[:] = (40 + 50 * i, 120, 200 - 40 * i)
        img[20:70, 30 + 10 * i : 90 + 10 * i] = (220, 60 + 30 * i, 40)
        path = folder / ("%d.png" % i)
        Image.fromarray(img).save(path)
        gt = np.zeros((96, 128), np.uint8)
        gt[20:70, 30 + 10 * i : 90 + 10 * i] = 1 + i % 2
        samples.append(fo.Sample(filepath=str(path), ground_truth=fo.Segmentation(mask=gt)))
    ds.add_samples(samples)
    ds.mask_targets = {"ground_truth": {1: "cat", 2: "dog"}}
    ds.save()
    ff.segment_samples(ds, classes=["cat", "dog"], segmenter=tiny_faseg, threshold=0.3)
    evaluate_faseg(ds, "faseg", gt_field="ground_truth", eval_key="faseg_eval")
    ds.app_config.active_fields = fo.ActiveFields(paths=["ground_truth", "faseg"])
    ds.save()
    yield ds
    ds.delete()


@pytest.fixture(scope="module")
def app_server(app_dataset, tmp_path_factory):
    """``python -m fiftyone.server.main`` on a free port, on the tests' database."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("app-server") / "server.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "fiftyone.server.main", "--address", "127.0.0.1",
                             "--port", str(port)], env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.time() + 60
    while True:
        try:
            if "version" in _graphql(port, "{ version }").get("data", {}):
                break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail("the App server did not start: %s" % log_path.read_text(errors="replace")[-2000:])
        time.sleep(0.3)
    yield port
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


def test_graphql_sees_dataset_fields_and_evaluation(app_dataset, app_server):
    data = _graphql(app_server, '{ dataset(name: "%s") { name estimatedSampleCount evaluations { key } } }'
                    % app_dataset.name)
    assert "errors" not in data, data
    dataset = data["data"]["dataset"]
    assert dataset["estimatedSampleCount"] == N
    assert "faseg_eval" in [e["key"] for e in dataset["evaluations"]]


def test_app_shows_masks_and_evaluation_in_chromium(app_dataset, app_server, tmp_path):
    url = "http://127.0.0.1:%d/datasets/%s" % (app_server, app_dataset.name)
    with sync_api.sync_playwright() as pw:
        # a fresh profile: Playwright takes it as launch_persistent_context's user_data_dir
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1400, "height": 900},
        )
        try:
            context.add_init_script("window.IS_PLAYWRIGHT = true;")  # no Enterprise popup
            page = context.new_page()
            page.goto(url, wait_until="domcontentloaded", timeout=60000)
            counts = page.locator("[data-cy=entry-counts]")
            counts.wait_for(timeout=60000)
            page.wait_for_function(
                "() => /%d samples/.test(document.querySelector('[data-cy=entry-counts]')?.textContent || '')" % N,
                timeout=60000,
            )
            # every grid tile drew its image with the ground truth and FA-Seg masks on it
            page.wait_for_function(
                "() => document.querySelectorAll('[data-cy=looker] canvas[canvas-loaded=true]').length >= %d" % N,
                timeout=60000,
            )
            sidebar = page.locator("body").inner_text()
            for name in ("ground_truth", "faseg", "faseg_candidates", "faseg_eval_miou"):
                assert name in sidebar, "field %s not in the sidebar" % name
            shot = tmp_path / "app.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            context.close()
    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape[0] >= 800 and image.std() > 10  # not blank
    out = ROOT / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, out / "app.png")

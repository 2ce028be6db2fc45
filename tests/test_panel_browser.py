"""The FA-Seg panel in the real App, in a headless Chromium: it opens from the "new panel"
menu, draws its per-class IoU chart, and a click on a bar sets the App's view to the
samples of that class, worst IoU first.

Skips cleanly without Chromium or playwright (``make browser``).
"""

import os
import re

import pytest

N = 6

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make browser)")
from browser_support import CHROMIUM, app_server as _server, browser_page, wait_for_grid  # noqa: E402

if CHROMIUM is None:
    pytest.skip("Chromium is not installed (apt-get install -y chromium, or make browser)", allow_module_level=True)

import fiftyone as fo  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import fiftyone_faseg.evaluation as ffe  # noqa: E402


@pytest.fixture(scope="module")
def panel_dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("panel-images")
    ds = fo.Dataset("faseg-panel-%d" % os.getpid())
    samples = []
    for i in range(N):
        path = folder / ("%d.png" % i)
        Image.fromarray(np.full((60, 80, 3), 40 * i, np.uint8)).save(path)
        gt = np.zeros((60, 80), np.uint8)
        gt[10:50, 10:40] = 1 if i < 3 else 2  # cat in three samples, dog in the other three
        gt[30:55, 50:75] = 3  # bird everywhere
        pred = np.roll(gt, 2 * i, axis=1)  # worse and worse
        samples.append(fo.Sample(filepath=str(path), ground_truth=fo.Segmentation(mask=gt),
                                 faseg=fo.Segmentation(mask=pred)))
    ds.add_samples(samples)
    ds.mask_targets = {"ground_truth": {1: "cat", 2: "dog", 3: "bird"}, "faseg": {1: "cat", 2: "dog", 3: "bird"}}
    ds.save()
    ffe.evaluate_faseg(ds, "faseg", eval_key="ev")
    yield ds
    ds.delete()


@pytest.fixture(scope="module")
def app_server(panel_dataset, tmp_path_factory):
    with _server(tmp_path_factory.mktemp("panel-server")) as port:
        yield port


def _count_text(page):
    return page.locator("[data-cy=entry-counts]").inner_text()


def test_panel_chart_and_bar_click_set_the_view(panel_dataset, app_server, tmp_path):
    classes = [r["class"] for r in ffe.evaluation_summary(panel_dataset, "ev")["classes"]]
    target = "cat"
    expected = ffe.class_view(panel_dataset, "ev", target)
    assert len(expected) == 3

    url = "http://127.0.0.1:%d/datasets/%s" % (app_server, panel_dataset.name)
    with browser_page(tmp_path / "profile", viewport=(1600, 1000)) as page:
        console = []
        page.on("console", lambda m: console.append(m.text))
        page.goto(url, wait_until="domcontentloaded", timeout=60000)
        wait_for_grid(page, N)
        assert "%d samples" % N in _count_text(page)

        page.locator("[data-cy=new-panel-btn]").first.click()
        page.locator("[data-cy=new-panel-option-faseg_panel]").click(timeout=30000)

        # the chart: one bar per class of the mean, worst IoU first
        bars = page.locator(".js-plotly-plot .barlayer .point")
        page.wait_for_function(
            "n => document.querySelectorAll('.js-plotly-plot .barlayer .point').length >= n",
            arg=len(classes), timeout=60000)
        assert "mIoU" in page.locator("body").inner_text()
        page.screenshot(path=str(tmp_path / "panel.png"))

        before = _count_text(page)
        changed = "t => (document.querySelector('[data-cy=entry-counts]')?.textContent || t) !== t"
        try:
            for attempt in range(3):  # a click while the chart is still settling can be lost
                box = bars.nth(classes.index(target)).bounding_box()
                x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
                page.mouse.move(x, y)
                page.mouse.click(x, y)
                try:
                    page.wait_for_function(changed, arg=before, timeout=20000)
                    break
                except sync_api.TimeoutError:
                    if attempt == 2:
                        raise
        finally:
            page.screenshot(path=str(tmp_path / "panel-clicked.png"))
            print("\n".join(console[-30:]))
        after = _count_text(page)
    assert re.search(r"(^|\D)%d\b" % len(expected), after), (before, after)

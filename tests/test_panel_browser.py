"""The FA-Seg panel in the real App, in a headless Chromium, read as a curator reads it:

-   a failed (half-registered) evaluation shows a message and leaves the panel working;
-   the chart draws ``results.class_iou``; a zero-IoU class opens its samples from the table;
-   a change of the prediction made elsewhere shows "Stale" at the next view change, without
    a reload, and after Re-evaluate the chart draws the new ``results.class_iou``, not the
    old arrays merged with the new ones.

Skips cleanly without Chromium or playwright (``make browser``).
"""

import json
import os
import re

import pytest

N = 6

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make browser)")
from browser_support import CHROMIUM, PLOTS, app_server as _server, browser_page, wait_for_chart  # noqa: E402

if CHROMIUM is None:
    pytest.skip("Chromium is not installed (apt-get install -y chromium, or make browser)", allow_module_level=True)

import fiftyone as fo  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import fiftyone_faseg.evaluation as ffe  # noqa: E402
from fiftyone_faseg.run.settings import RunRecord  # noqa: E402

TARGETS = {1: "cat", 2: "dog", 3: "bird", 4: "cow"}


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
        if i == 0:
            gt[0:8, 60:80] = 4  # a cow, never predicted: IoU 0
        pred = np.roll(np.where(gt == 4, 0, gt), 2 * i, axis=1)  # worse and worse
        samples.append(fo.Sample(filepath=str(path), ground_truth=fo.Segmentation(mask=gt),
                                 faseg=fo.Segmentation(mask=pred)))
    ds.add_samples(samples)
    ds.mask_targets = {"ground_truth": TARGETS, "faseg": TARGETS}
    ds.save()
    RunRecord(threshold=0.55).write(ds, "faseg")
    ffe.evaluate_faseg(ds, "faseg", eval_key="ev")
    yield ds
    ds.delete()


@pytest.fixture(scope="module")
def app_server(panel_dataset, tmp_path_factory):
    with _server(tmp_path_factory.mktemp("panel-server")) as port:
        yield port


def _count_text(page):
    return page.locator("[data-cy=entry-counts]").inner_text()


def _open_panel(page, port, dataset):
    page.goto("http://127.0.0.1:%d/datasets/%s" % (port, dataset.name), wait_until="domcontentloaded",
              timeout=60000)
    # the server keeps the last view it showed (a previous test's click): any count will do
    page.wait_for_function("() => /\\d+ samples?/.test(document.querySelector('[data-cy=entry-counts]')"
                           "?.textContent || '')", timeout=60000)
    page.wait_for_function("() => document.querySelectorAll('[data-cy=looker] canvas[canvas-loaded=true]').length",
                           timeout=60000)
    if page.get_by_text("FA-Seg", exact=True).count():
        return  # the server kept the panel open from a previous test
    page.locator("[data-cy=new-panel-btn]").first.click()
    page.locator("[data-cy=new-panel-option-faseg_panel]").click(timeout=30000)


def _wait_count_changes(page, before, timeout=30000):
    page.wait_for_function("t => (document.querySelector('[data-cy=entry-counts]')?.textContent || t) !== t",
                           arg=before, timeout=timeout)
    return _count_text(page)


def test_failed_evaluation_and_zero_iou_class(panel_dataset, app_server, tmp_path):
    ds = panel_dataset
    ffe.evaluate_faseg(ds, "faseg", eval_key="bad")  # the newest: the panel shows it first
    doc = ds._doc.evaluations["bad"]
    doc.results = None  # half-registered: the run exists, its results do not
    doc.save()
    results = ds.load_evaluation_results("ev")
    assert results.class_iou["cow"] == 0.0

    with browser_page(tmp_path / "profile", viewport=(1600, 1400)) as page:
        try:
            _open_panel(page, app_server, ds)
            page.get_by_text("Evaluation 'bad' cannot be shown").wait_for(timeout=60000)
            assert "Operator Error" not in page.locator("body").inner_text()

            # the panel still works: choose the other evaluation
            page.get_by_role("combobox").filter(has_text=re.compile(r"^bad$")).click()
            page.get_by_role("option", name="ev", exact=True).click()
            trace = wait_for_chart(page, results.class_iou)
            assert trace["text"] == ["%.1f %%" % (100 * results.class_iou[c]) for c in trace["x"]]

            # a class of IoU 0 opens its samples from the table
            before = _count_text(page)
            row = page.locator("tr", has=page.get_by_text("cow", exact=True))
            row.get_by_role("button", name="Samples").click()
            after = _wait_count_changes(page, before)
        finally:
            page.screenshot(path=str(tmp_path / "panel-cow.png"), full_page=True)
    expected = ffe.class_view(ds, "ev", "cow")
    assert len(expected) == 1
    assert re.search(r"(^|\D)1 (of %d )?sample" % N, after), (before, after)
    ds.delete_evaluation("bad")


def test_stale_without_reload_and_chart_after_reevaluate(panel_dataset, app_server, tmp_path):
    ds = panel_dataset
    results = ds.load_evaluation_results("ev")
    with browser_page(tmp_path / "profile", viewport=(1600, 1400)) as page:
        try:
            _open_panel(page, app_server, ds)
            wait_for_chart(page, results.class_iou)
            assert page.get_by_text("Stale: the prediction changed").count() == 0

            # another process writes the prediction (a re-threshold at 0.8: nothing but background)
            for sample in ds:
                sample["faseg"] = fo.Segmentation(mask=np.zeros((60, 80), np.uint8))
                sample.save()
            RunRecord.read(ds, "faseg").replace(threshold=0.8).new_revision().write(ds, "faseg")

            # the next view change (a click on a class) reads the revision: stale, without a reload
            before = _count_text(page)
            row = page.locator("tr", has=page.get_by_text("cat", exact=True))
            row.get_by_role("button", name="Samples").click()
            _wait_count_changes(page, before)
            page.get_by_text("Stale: the prediction changed").wait_for(timeout=30000)

            page.get_by_role("button", name="Re-evaluate").click()
            page.get_by_text("Stale: the prediction changed").wait_for(state="detached", timeout=120000)
            ds.reload()
            ds.clear_cache()
            new = ds.load_evaluation_results("ev")
            assert [v for c, v in new.class_iou.items() if c != "background"] == [0.0] * 4
            trace = wait_for_chart(page, new.class_iou, timeout=30000)

            # and after a reload of the page: the panel reads the stored evaluation again
            page.reload(wait_until="domcontentloaded")
            after_reload = wait_for_chart(page, new.class_iou, timeout=60000)
            assert after_reload == trace
        finally:
            page.screenshot(path=str(tmp_path / "panel-reevaluated.png"), full_page=True)
            print(json.dumps(page.evaluate(PLOTS))[:3000])
    assert trace["text"] == ["%.1f %%" % (100 * new.class_iou[c]) for c in trace["x"]]
    assert not ffe.is_stale(ds, "ev")

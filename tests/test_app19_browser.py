"""The analysis in the App, driven in a headless Chromium as a curator drives it:

-   FiftyOne's own Model Evaluation panel shows the mIoU in percent, and a confusion-matrix
    cell of an FA-Seg evaluation opens exactly its samples;
-   the FA-Seg panel's chart after "Apply this threshold" (a re-threshold from stored
    scores, with its counts streamed to the form) and Re-evaluate draws exactly
    ``results.class_iou``, although the re-threshold removed a class from the chart (the
    case that a panel merging new data into its old arrays gets wrong).

Skips cleanly without Chromium or playwright (``make browser``).
"""

import json
import os
import re

import pytest

N = 5
SLOW = 180000  # ms: the App server imports torch on the first re-threshold

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make browser)")
from browser_support import (CHROMIUM, PLOTS, app_server as _server, browser_page, gt_dataset,  # noqa: E402
                             wait_for_chart)

if CHROMIUM is None:
    pytest.skip("Chromium is not installed (apt-get install -y chromium, or make browser)", allow_module_level=True)

import fiftyone_faseg as ff  # noqa: E402
import fiftyone_faseg.evaluation as ffe  # noqa: E402

# the page position of one confusion-matrix cell, by its x (predicted) and y (ground truth)
# class, once its chart has stopped moving (a section expands with an animation)
CELL = """([x, y]) => {
    for (const gd of document.querySelectorAll('.js-plotly-plot')) {
        const t = (gd.data || [])[0];
        if (!t || t.type !== 'heatmap' || !gd.getBoundingClientRect().width) continue;
        gd.scrollIntoView({block: 'center'});
        const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, r = gd.getBoundingClientRect();
        const pos = {x: r.left + xa._offset + xa.l2p(Array.from(t.x).indexOf(x)),
                     y: r.top + ya._offset + ya.l2p(Array.from(t.y).indexOf(y))};
        const last = window.__cell;
        window.__cell = pos;
        return last && last.x === pos.x && last.y === pos.y ? pos : null;
    }
    return null;
}"""
@pytest.fixture(scope="module")
def scored(tmp_path_factory, stub_faseg, tiny_sd_dir):
    """5 images (cat or dog boxes) segmented at 0.55 into cat, dog and boat with stored scores,
    and evaluated: boat is in the ground truth's classes but in no mask, predicted at 0.55
    only (a re-threshold at 0.8 removes its bar)."""
    ds = gt_dataset(tmp_path_factory.mktemp("app19-images"), "faseg-app19-%d" % os.getpid(), N)
    ds.mask_targets = {"ground_truth": {1: "cat", 2: "dog", 3: "boat"}}
    ds.save()
    ff.segment_samples(ds, classes=["cat", "dog", "boat"], segmenter=stub_faseg, model_path=str(tiny_sd_dir),
                       store_scores=True, threshold=0.55, batch_size=2)
    ffe.evaluate_faseg(ds, "faseg", eval_key="ev")
    yield ds
    ds.delete()


@pytest.fixture(scope="module")
def app_server(scored, tmp_path_factory):
    with _server(tmp_path_factory.mktemp("app19-server")) as port:
        yield port


def _goto(page, port, dataset):
    page.goto("http://127.0.0.1:%d/datasets/%s" % (port, dataset.name), wait_until="domcontentloaded",
              timeout=60000)
    # the server keeps the last view it showed: any count will do
    page.wait_for_function("() => /\\d+ samples?/.test(document.querySelector('[data-cy=entry-counts]')"
                           "?.textContent || '')", timeout=60000)


def _new_panel(page, name):
    page.locator("[data-cy=new-panel-btn]").first.click()
    page.locator("[data-cy=new-panel-option-%s]" % name).click(timeout=30000)


def _count(page):
    return page.locator("[data-cy=entry-counts]").inner_text()


def _click_cell(page, x, y):
    page.evaluate("() => { window.__cell = null; }")
    pos = page.wait_for_function(CELL, arg=[x, y], polling=300, timeout=30000).json_value()
    page.mouse.move(pos["x"], pos["y"])
    page.mouse.click(pos["x"], pos["y"])


def _wait_for_count(page, count, timeout=60000):
    page.wait_for_function("n => new RegExp('(^|\\\\D)' + n + ' (of \\\\d+ )?samples?').test("
                           "document.querySelector('[data-cy=entry-counts]')?.textContent || '')",
                           arg=count, timeout=timeout)


def _masks(ds):
    """Each sample's ground truth and predicted masks as class names (independent of the
    evaluation: what a cell's or a class's samples are)."""
    import numpy as np

    out = []
    for sample in ds:
        gt, pred = sample.ground_truth.get_mask(), sample.faseg.get_mask()
        names = []
        for mask, targets in ((gt, ds.mask_targets["ground_truth"]), (pred, ds.mask_targets["faseg"])):
            lut = np.array(["background"] + [targets.get(v, "?") for v in range(1, 256)], dtype=object)
            names.append(lut[mask])
        out.append(names)
    return out


def _heatmap(page):
    """The confusion matrix the Model Evaluation panel draws: its x and y classes."""
    return page.wait_for_function("""() => {
        for (const gd of document.querySelectorAll('.js-plotly-plot')) {
            const t = (gd.data || [])[0];
            if (t && t.type === 'heatmap' && gd.getBoundingClientRect().width) {
                return {x: Array.from(t.x), y: Array.from(t.y)};
            }
        }
        return null;
    }""", timeout=30000).json_value()


def _open_evaluation(page, key):
    """Open evaluation `key` from the Model Evaluation panel's list. A click that comes before
    the panel listens (a cold App server, once in a CI run) leaves the list in place: again."""
    listing = page.get_by_text(re.compile(r"^\d+ Model Evaluations?$"))
    for _ in range(3):
        page.get_by_text(key, exact=True).first.click(timeout=60000)
        try:
            listing.wait_for(state="detached", timeout=20000)  # the list gave way to the evaluation
            return
        except sync_api.TimeoutError:
            continue
    raise AssertionError(f"the Model Evaluation panel did not open {key!r}")


def test_model_evaluation_panel_opens_a_confusion_cells_samples(scored, app_server, tmp_path):
    ds = scored
    results = ds.load_evaluation_results("ev")
    masks = _masks(ds)
    with browser_page(tmp_path / "profile", viewport=(1600, 1300)) as page:
        try:
            _goto(page, app_server, ds)
            _new_panel(page, "model_evaluation_panel_builtin")
            _open_evaluation(page, "ev")

            # its summary shows the mIoU in percent, as every FA-Seg view does
            page.wait_for_function("() => /mIoU \\(%\\)\\s+[\\d.]+/.test(document.body.innerText)", timeout=60000)
            shown = re.search(r"mIoU \(%\)\s+([\d.]+)", page.locator("body").inner_text())
            assert shown and float(shown.group(1)) == pytest.approx(100 * results.miou, abs=1e-3), shown

            # a cell it draws (x: predicted, y: ground truth) whose samples are some but not all
            page.get_by_text("Confusion Matrices").click()
            heat = _heatmap(page)
            cells = [(g, p, sum(bool(((gt == g) & (pred == p)).any()) for gt, pred in masks))
                     for g in heat["y"] for p in heat["x"]]
            gt, pred, in_cell = next((c for c in cells if 0 < c[2] < N), (None, None, None))
            assert gt is not None, cells
            _click_cell(page, pred, gt)
            _wait_for_count(page, in_cell)

        finally:
            page.screenshot(path=str(tmp_path / "app19-model-evaluation.png"), full_page=True)


def test_chart_after_apply_threshold_and_reevaluate_is_class_iou(scored, app_server, tmp_path):
    ds = scored
    before = ds.load_evaluation_results("ev")
    assert "boat" in before.class_iou  # predicted at 0.55: a bar of its own
    streamed = []
    with browser_page(tmp_path / "profile", viewport=(1600, 1400)) as page:
        try:
            page.on("requestfinished", lambda r: streamed.append(r.response().text())
                    if r.url.endswith("/operators/execute/generator") else None)
            _goto(page, app_server, ds)
            _new_panel(page, "faseg_panel")
            wait_for_chart(page, before.class_iou)

            # the threshold slider to 0.8 (5 steps of 0.05 from the run's 0.55), then Apply
            rail = page.locator(".MuiSlider-root", has=page.locator("input[type=range][min='0.05']"))  # the panel's
            # a locator's click waits for the element to be attached and stable (the panel may
            # render it again as its data arrives), scrolls to it and clicks at this offset
            width, height = rail.evaluate("e => [e.getBoundingClientRect().width, e.getBoundingClientRect().height]")
            rail.click(position={"x": width * (0.8 - 0.05) / 0.9, "y": height / 2})
            page.get_by_text(re.compile(r"At threshold 0\.80")).wait_for(timeout=30000)
            page.get_by_role("button", name=re.compile("Apply this threshold")).click()

            # the re-threshold form, pre-filled for the whole field: execute, see its counts
            page.get_by_role("button", name="Execute").wait_for(timeout=60000)
            page.wait_for_function("() => [...document.querySelectorAll('button')].some("
                                   "b => b.innerText.trim() === 'Execute' && !b.disabled)", timeout=60000)
            page.get_by_role("button", name="Execute").click()
            page.get_by_text("Masks written").wait_for(timeout=SLOW)
            summary = page.locator("body").inner_text()
            assert re.search(r"Masks written:?\s*%d\b" % N, summary), summary[-600:]
            page.get_by_role("button", name="Done").click()  # one dialog: the counts, then the summary
            page.get_by_text("Re-threshold complete").wait_for(state="detached", timeout=30000)

            # stale at once (the panel reads the evaluation again when the re-threshold succeeds)
            page.get_by_text("Stale: the prediction changed").wait_for(timeout=60000)
            stamp = ds.get_evaluation_info("ev").timestamp
            page.get_by_role("button", name="Re-evaluate").click()
            page.get_by_text("Stale: the prediction changed").wait_for(state="detached", timeout=SLOW)
            for _ in range(240):  # the evaluation stored again (the warning also goes while the panel reloads)
                ds.reload()
                # the key may be absent for a moment: the old record goes when the new run is
                # complete, just before the new one is registered
                if "ev" in ds.list_evaluations() and ds.get_evaluation_info("ev").timestamp != stamp:
                    break
                page.wait_for_timeout(500)
            ds.clear_cache()
            after = ds.load_evaluation_results("ev")
            assert "boat" not in after.class_iou and after.class_iou != before.class_iou
            trace = wait_for_chart(page, after.class_iou)
        finally:
            page.screenshot(path=str(tmp_path / "app19-chart.png"), full_page=True)
            print(json.dumps(page.evaluate(PLOTS))[:3000])
    assert trace["text"] == ["%.1f %%" % (100 * after.class_iou[c]) for c in trace["x"]]
    assert ds.get_field("faseg").info["faseg"]["threshold"] == pytest.approx(0.8)

    # the counts reached the App as the re-threshold ran (on 5 samples the dialog shows them too
    # briefly to be asserted on reliably), then the summary
    lines = [json.loads(line) for text in streamed for line in text.splitlines() if line.strip()]
    labels = [m["body"]["params"].get("label") for m in lines
              if m.get("cls") == "InvocationRequest" and m["body"]["operator_uri"] == "set_progress"]
    assert labels and labels[-1] == "Re-thresholded %d / %d samples" % (N, N), lines
    assert lines[-1]["body"]["operator_uri"] == "show_output" and lines[-1]["body"]["params"]["results"]["written"] == N


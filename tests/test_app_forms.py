"""The FA-Seg forms in the App, in a real headless Chromium, driven as a user does: select
samples in the grid, open ``run_faseg`` from the operator browser, fill it, execute, see
the summary and masks on the selected samples only; a bad model path is flagged in the
form, a model that fails to load shows an error in the page, the overwrite warning is
seen without scrolling, and the threshold sweep plots readably.

Skips cleanly without Chromium or playwright (``make browser``). Screenshots are copied
to ``benchmarks/out/app-*.png``.
"""

import os
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
N = 4
SELECTED = (0, 2)
SLOW = 180000  # ms: the App server imports torch and loads the model on the first run

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make browser)")
from browser_support import (  # noqa: E402
    CHROMIUM, app_server as _server, browser_page, form_input, gt_dataset, open_operator, select_samples, settle,
    type_into, wait_for_grid,
)

if CHROMIUM is None:
    pytest.skip("Chromium is not installed (apt-get install -y chromium, or make browser)", allow_module_level=True)

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


@pytest.fixture(scope="module")
def app_dataset(tmp_path_factory):
    ds = gt_dataset(tmp_path_factory.mktemp("form-images"), "faseg-forms-%d" % os.getpid(), N)
    yield ds
    ds.delete()


@pytest.fixture(scope="module")
def app(app_dataset, tmp_path_factory):
    # started as README says, so that runs can also be scheduled
    with _server(tmp_path_factory.mktemp("forms-server"), env=dict(FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS="true")) as port:
        yield "http://127.0.0.1:%d/datasets/%s" % (port, app_dataset.name)


def keep(shot, name):
    out = ROOT / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, out / name)
    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.std() > 10  # not blank


def execute_enabled(page):
    page.wait_for_function(
        "() => [...document.querySelectorAll('button')].some(b => b.innerText.trim() === 'Execute' && !b.disabled)",
        timeout=60000,  # the form round trip imports huggingface_hub the first time
    )


def test_run_faseg_form_segments_only_the_selected_samples(app, app_dataset, tiny_sd_dir, tmp_path):
    with browser_page(tmp_path / "profile") as page:
        page.goto(app, wait_until="domcontentloaded", timeout=60000)
        wait_for_grid(page, N)
        select_samples(page, SELECTED)
        open_operator(page, "segment images")
        page.get_by_role("button", name="Add classes").click()
        type_into(form_input(page, "Classes"), "cat")
        page.get_by_role("button", name="Add classes").click()
        typed = [(form_input(page, "Classes", 2), "dog"), (form_input(page, "Diffusion model"), str(tiny_sd_dir)),
                 (form_input(page, "Background threshold"), "0.3"), (form_input(page, "Image size"), "128")]
        for field, text in typed:
            type_into(field, text)
        settle(page, [(form_input(page, "Classes"), "cat"), *typed])
        page.get_by_text("Store score maps", exact=True).click()
        assert "start a worker with fiftyone delegated launch" in page.locator("body").inner_text()
        execute_enabled(page)
        page.get_by_role("button", name="Execute").click()

        page.get_by_text("Files written to:").wait_for(timeout=SLOW)  # the run's summary view
        summary = page.locator("body").inner_text()
        for name, count in (("Segmented", 2), ("Skipped (already labelled)", 0), ("Failed (reasons in faseg_error)", 0)):
            assert re.search(r"%s:\s*%d\b" % (re.escape(name), count), summary), summary[-600:]
        assert os.path.join("faseg", str(app_dataset._doc.id)) in summary  # where the score maps went
        page.get_by_role("button", name="Done").click()
        page.goto(app, wait_until="domcontentloaded", timeout=60000)  # a fresh load shows the new masks
        wait_for_grid(page, N)
        page.wait_for_function("() => document.body.innerText.includes('faseg_candidates')", timeout=30000)
        shot = tmp_path / "run.png"
        page.screenshot(path=str(shot))
    keep(shot, "app-run-faseg.png")

    app_dataset.reload()
    selected = [app_dataset.values("id")[i] for i in SELECTED]
    assert sorted(app_dataset.exists("faseg").values("id")) == sorted(selected)
    assert app_dataset.mask_targets["faseg"] == {1: "cat", 2: "dog"}
    for sample in app_dataset.select(selected):
        assert sample.faseg.get_mask().shape == (96, 128) and sample.faseg_scores


def test_bad_model_path_flagged_and_load_error_shown(app, app_dataset, tmp_path):
    with browser_page(tmp_path / "profile") as page:
        page.goto(app, wait_until="domcontentloaded", timeout=60000)
        wait_for_grid(page, N)
        open_operator(page, "segment images")
        page.get_by_role("button", name="Add classes").click()
        type_into(form_input(page, "Classes"), "cat")
        # the field already has labels: the warning is seen without scrolling the dialog
        warning = page.get_by_text("target samples already have 'faseg'")
        warning.wait_for(timeout=30000)
        box, viewport = warning.bounding_box(), page.viewport_size
        assert 0 < box["y"] < viewport["height"] * 0.6, box
        page.get_by_text("Overwrite their labels", exact=True).click()
        type_into(form_input(page, "Label field"), "faseg_bad")

        type_into(form_input(page, "Diffusion model"), "/no/such/model")
        page.get_by_text("is neither an existing folder nor a Hugging Face Hub id").wait_for(timeout=30000)
        assert page.get_by_role("button", name="Execute").is_disabled()
        shot = tmp_path / "flagged.png"
        page.screenshot(path=str(shot))
        keep(shot, "app-bad-model-path.png")

        type_into(form_input(page, "Diffusion model"), "nobody/no-such-faseg-model")  # a Hub id: only loading fails
        execute_enabled(page)
        page.get_by_role("button", name="Execute").click()
        error = page.get_by_text("could not load the diffusion model 'nobody/no-such-faseg-model'")
        error.wait_for(timeout=SLOW)
        assert "FA-Seg: segment images failed" in page.locator("body").inner_text()
        shot = tmp_path / "error.png"
        page.screenshot(path=str(shot))
    keep(shot, "app-run-error.png")
    app_dataset.reload()
    assert not app_dataset.has_field("faseg_bad") or app_dataset.count("faseg_bad") == 0


def test_sweep_plot_readable_with_axis_titles(app, app_dataset, tmp_path):
    assert app_dataset.has_field("faseg_scores"), "needs the scored run of the first test"
    with browser_page(tmp_path / "profile") as page:
        page.goto(app, wait_until="domcontentloaded", timeout=60000)
        wait_for_grid(page, N)
        open_operator(page, "mIoU per threshold")
        page.get_by_text("Ground truth field", exact=True).wait_for(timeout=30000)
        execute_enabled(page)
        page.get_by_role("button", name="Execute").click()
        plot = page.locator(".js-plotly-plot").first
        plot.wait_for(timeout=SLOW)
        page.wait_for_selector(".js-plotly-plot .xtitle", timeout=30000)
        box = plot.bounding_box()
        assert box["height"] >= 250 and box["width"] >= 400, box
        assert plot.locator(".xtitle").text_content() == "Background threshold"
        assert plot.locator(".ytitle").text_content() == "mIoU (%)"
        text = page.locator("body").inner_text()
        assert "Best mIoU" in text and " %" in text
        shot = tmp_path / "sweep.png"
        page.screenshot(path=str(shot))
    keep(shot, "app-sweep.png")

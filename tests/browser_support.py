"""The App in a real headless Chromium, for the browser tests: a server of our own on the
tests' database and a fresh browser profile (see FIFTYONE_NOTES.md).

Import it from a test module after ``pytest.importorskip("playwright.sync_api")``; use
:data:`CHROMIUM` to skip when Chromium is absent.
"""

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

CHROMIUM = next((p for p in ("/usr/lib/chromium/chromium", shutil.which("chromium") or "") if p and os.path.isfile(p)),
                None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(port, query):
    req = urllib.request.Request("http://127.0.0.1:%d/graphql" % port, data=json.dumps({"query": query}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


@contextlib.contextmanager
def app_server(log_dir, env=None):
    """``python -m fiftyone.server.main`` on a free port, on the tests' database; yields the port."""
    port = free_port()
    log_path = os.path.join(str(log_dir), "server.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "fiftyone.server.main", "--address", "127.0.0.1",
                                 "--port", str(port)], env=dict(os.environ, **(env or {})), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.time() + 60
            while True:
                try:
                    if "version" in graphql(port, "{ version }").get("data", {}):
                        break
                except OSError:
                    pass
                if proc.poll() is not None or time.time() > deadline:
                    with open(log_path, errors="replace") as f:
                        raise RuntimeError("the App server did not start: %s" % f.read()[-2000:])
                time.sleep(0.3)
            yield port
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def browser_page(profile_dir, viewport=(1400, 900)):
    """A Playwright page in a fresh Chromium profile (no Enterprise popup)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile_dir), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": viewport[0], "height": viewport[1]},
        )
        try:
            context.add_init_script("window.IS_PLAYWRIGHT = true;")
            yield context.new_page()
        finally:
            context.close()


def wait_for_grid(page, count, timeout=60000):
    """Waits until the grid says ``count`` samples and that many tiles have drawn."""
    page.locator("[data-cy=entry-counts]").wait_for(timeout=timeout)
    page.wait_for_function(
        "() => /%d samples/.test(document.querySelector('[data-cy=entry-counts]')?.textContent || '')" % count,
        timeout=timeout,
    )
    page.wait_for_function(
        "() => document.querySelectorAll('[data-cy=looker] canvas[canvas-loaded=true]').length >= %d" % count,
        timeout=timeout,
    )


# ---------------------------------------------------------------------- driving forms


def select_samples(page, indices):
    """Selects grid tiles by position, with their checkboxes, as a user does."""
    for i in indices:
        tile = page.locator("[data-cy=looker]").nth(i)
        tile.hover()
        tile.locator("label").click()


def open_operator(page, search):
    """Opens an operator's form from the operator browser (the "`" key), by its label."""
    page.mouse.move(5, 880)  # off any input, so the key reaches the App
    page.keyboard.press("`")
    page.keyboard.type(search)
    page.keyboard.press("Enter")


def form_input(page, label, nth=1):
    """The ``nth`` input after the form label ``label`` (list items follow their label)."""
    return page.locator("xpath=//p[normalize-space()=%r]/following::input[%d]" % (label, nth))


def type_into(field, text, attempts=3):
    """Replaces an input's text key by key, then leaves it, so the form sees the change.
    The form re-renders when a round trip of an earlier change returns, and a keystroke
    typed at that moment can be lost: the text is typed again until the input holds it."""
    text = str(text)
    for _ in range(attempts):
        field.click()
        field.press("Control+a")
        field.press_sequentially(text, delay=20)
        field.press("Tab")
        if field.input_value() == text:
            return
    raise AssertionError("the input holds %r after typing %r %d times" % (field.input_value(), text, attempts))


def settle(page, typed, quiet_ms=800, rounds=5):
    """After a form is filled, each ``(input, text)`` of ``typed`` holds its text through a
    quiet moment: the form can re-render with the params of an earlier keystroke's round trip
    after the input held the whole text (a CI run once sent "do" for "dog"), so an input that
    lost its text is typed again, until none does."""
    for _ in range(rounds):
        page.wait_for_timeout(quiet_ms)
        lost = [(field, text) for field, text in typed if field.input_value() != str(text)]
        if not lost:
            return
        for field, text in lost:
            type_into(field, text)
    raise AssertionError("the form keeps losing typed text: %r" % [(f.input_value(), t) for f, t in typed])


def gt_dataset(folder, name, count):
    """``count`` 128×96 images, each with one coloured box and its ground truth mask
    (cat or dog, alternately), shown with FA-Seg's field in the grid."""
    import fiftyone as fo
    import numpy as np
    from PIL import Image

    ds = fo.Dataset(name)
    samples = []
    for i in range(count):
        img = np.zeros((96, 128, 3), np.uint8)
        img[:] = (40 + 50 * i, 120, 200 - 40 * i)
        img[20:70, 30 + 10 * i : 90 + 10 * i] = (220, 60 + 30 * i, 40)
        path = os.path.join(str(folder), "%d.png" % i)
        Image.fromarray(img).save(path)
        gt = np.zeros((96, 128), np.uint8)
        gt[20:70, 30 + 10 * i : 90 + 10 * i] = 1 + i % 2
        samples.append(fo.Sample(filepath=path, ground_truth=fo.Segmentation(mask=gt)))
    ds.add_samples(samples)
    ds.mask_targets = {"ground_truth": {1: "cat", 2: "dog"}}
    ds.app_config.active_fields = fo.ActiveFields(paths=["ground_truth", "faseg"])
    ds.save()
    return ds


# the traces the App's Plotly charts draw, by chart
PLOTS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(
    gd => (gd.data || []).map(t => ({name: t.name, type: t.type, x: t.x, y: t.y, text: t.text})))"""


def iou_trace(page):
    """The drawn per-class IoU trace (x, y, text), or None before the chart draws."""
    for plot in page.evaluate(PLOTS):
        for trace in plot:
            if trace["name"] == "IoU":
                return trace
    return None


def wait_for_chart(page, class_iou, timeout=60000):
    """Waits until a drawn IoU trace has exactly the bars ``class_iou`` (in %); returns it."""
    from playwright import sync_api

    expected = {str(c): 100 * v for c, v in class_iou.items()}
    try:
        handle = page.wait_for_function(
            """expected => {
                for (const gd of document.querySelectorAll('.js-plotly-plot')) {
                    for (const t of (gd.data || [])) {
                        if (t.name === 'IoU' && t.x.length === Object.keys(expected).length &&
                            t.x.every((c, i) => c in expected && Math.abs(t.y[i] - expected[c]) < 1e-9)) {
                            return {x: Array.from(t.x), y: Array.from(t.y), text: Array.from(t.text || [])};
                        }
                    }
                }
                return null;
            }""",
            arg=expected, timeout=timeout)
    except sync_api.TimeoutError:
        raise AssertionError("the chart does not draw %s: it draws %s" % (expected, iou_trace(page)))
    return handle.json_value()

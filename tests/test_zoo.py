"""FA-Seg in FiftyOne's model zoo: this repository is a remote zoo source
(``manifest.json`` + ``download_model`` / ``load_model`` / ``resolve_input`` in the root
``__init__.py``).

The checkout is served as an archive over HTTP on 127.0.0.1 and registered with
``foz.register_zoo_model_source``, exactly as a GitHub URL would be; the tiny test
checkpoint is placed where the zoo keeps ``faseg-2rf``, and everything runs offline.
"""

import functools
import http.server
import os
import shutil
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import fiftyone as fo
import fiftyone.zoo as foz
import numpy as np
import pytest
from fiftyone.operators.executor import ExecutionContext
from PIL import Image

import fiftyone_faseg as ff

ROOT = Path(__file__).resolve().parents[1]
MODEL = "faseg-2rf"


@pytest.fixture(scope="module")
def source_url(tmp_path_factory):
    """The checkout (tracked and new files, as a clone would have them) as a .tar.gz on a
    local HTTP server."""
    try:
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                                capture_output=True, text=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: cannot list the repository's files")
    folder = tmp_path_factory.mktemp("zoo-source")
    with tarfile.open(folder / "fiftyone-faseg.tar.gz", "w:gz") as tar:
        for name in filter(None, listed):
            if (ROOT / name).is_file():
                tar.add(ROOT / name, arcname="fiftyone-faseg/" + name)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield "http://127.0.0.1:%d/fiftyone-faseg.tar.gz" % server.server_address[1]
    server.shutdown()


@pytest.fixture
def zoo_dir(tmp_path, monkeypatch):
    folder = tmp_path / "zoo"
    monkeypatch.setattr(fo.config, "model_zoo_dir", str(folder))
    return folder


@pytest.fixture
def registered(source_url, zoo_dir):
    foz.register_zoo_model_source(source_url)
    return source_url


def test_manifest_lists_the_model_with_its_license(registered, zoo_dir):
    assert registered in foz.list_zoo_model_sources()
    assert MODEL in foz.list_zoo_models(source=registered)
    assert MODEL in foz.list_zoo_models(license="CC-BY-NC-4.0")
    model = foz.get_zoo_model(MODEL)
    assert isinstance(model, foz.RemoteZooModel) and model.license == "CC-BY-NC-4.0"
    assert "segmentation" in model.tags
    # its folder in FiftyOne's model zoo folder
    assert model.get_path_in_dir(fo.config.model_zoo_dir) == str(zoo_dir / "faseg" / "fiftyone-faseg" / MODEL)
    env = dict(os.environ, FIFTYONE_MODEL_ZOO_DIR=str(zoo_dir))
    cli = [sys.executable, "-c", "import sys; from fiftyone.core.cli import main; sys.exit(main())"]
    listed = subprocess.run(cli + ["zoo", "models", "list"], env=env, capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert MODEL in listed.stdout


def test_local_checkpoint_at_the_zoo_path_loads_offline_and_applies(registered, tiny_sd_dir, tiny_config, tmp_path):
    path = foz.get_zoo_model(MODEL).get_path_in_dir(fo.config.model_zoo_dir)
    with pytest.raises(OSError, match="Offline, place a checkpoint folder holding unet/, vae/"):
        foz.load_zoo_model(MODEL, classes=["cat"], cache=False)  # HF_HUB_OFFLINE=1: nothing to fetch from
    shutil.copytree(tiny_sd_dir, path)

    model = foz.load_zoo_model(MODEL, classes=["cat", "dog"], image_size=128, cache=False)  # HF_HUB_OFFLINE=1
    assert isinstance(model, ff.FASegModel)
    assert model.config.model_path == path and model.config.config.image_size == 128

    ds = fo.Dataset()
    for i in range(3):
        img = np.full((40, 56, 3), (30 + 60 * i, 100, 180 - 50 * i), np.uint8)
        img[8:30, 10:40] = (220, 40, 60 + 40 * i)
        Image.fromarray(img).save(tmp_path / ("%d.png" % i))
        ds.add_sample(fo.Sample(filepath=str(tmp_path / ("%d.png" % i))))
    try:
        ds.apply_model(model, label_field="zoo", batch_size=2)
        direct = ff.FASegModel(model_path=str(tiny_sd_dir), classes=["cat", "dog"], config=tiny_config)
        ds.apply_model(direct, label_field="direct", batch_size=2)
        assert model.mask_targets == {1: "cat", 2: "dog"}
        for sample in ds:
            assert sample.zoo.mask.shape == (40, 56)
            assert np.array_equal(sample.zoo.mask, sample.direct.mask)  # the same model, through the zoo
    finally:
        ds.delete()


def test_download_model_fetches_nothing_when_the_checkpoint_is_there(registered, tiny_sd_dir, monkeypatch):
    import huggingface_hub

    zoo_model = foz.get_zoo_model(MODEL)
    path = zoo_model.get_path_in_dir(fo.config.model_zoo_dir)
    shutil.copytree(tiny_sd_dir, path)
    calls = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda **kwargs: calls.append(kwargs))
    foz.download_zoo_model(MODEL)
    assert calls == []
    shutil.rmtree(os.path.join(path, "vae"))  # incomplete: fetch the four components only
    foz.download_zoo_model(MODEL)
    (call,) = calls
    assert call["repo_id"] == "XCLiu/2_rectified_flow_from_sd_1_5" and call["local_dir"] == path
    assert sorted(call["allow_patterns"]) == ["text_encoder/*", "tokenizer/*", "unet/*", "vae/*"]


def test_apply_model_form_parameters(registered):
    zoo_model = foz.get_zoo_model(MODEL)

    def props(remote_params):
        ctx = ExecutionContext(request_params=dict(params=dict(model=MODEL, remote_params=remote_params)))
        return zoo_model.resolve_input(ctx).type.properties

    bad = props({})
    assert bad["classes"].invalid and "Name at least one class" in bad["classes"].error_message
    assert "CC-BY-NC-4.0" in bad["license"].view.label
    good = props(dict(classes=["cat"], threshold=0.4))
    assert not any(p.invalid for p in good.values())
    assert good["threshold"].invalid is False and props(dict(classes=["cat"], threshold=2))["threshold"].invalid
    params = dict(classes=["cat"], threshold=None, image_size=None)
    zoo_model.parse_parameters(ExecutionContext(request_params={}), params)
    assert params == dict(classes=["cat"])


def test_plugin_requirements_file_matches_the_package_and_is_satisfied():
    import tomllib

    import fiftyone.plugins as fop
    from fiftyone.plugins.core import _find_requirements

    path = _find_requirements("@faseg/fiftyone-faseg")
    assert path and Path(path).resolve() == (ROOT / "requirements.txt").resolve()
    fop.ensure_plugin_requirements("@faseg/fiftyone-faseg", error_level=0)  # raises if one is missing

    def names(reqs):
        return {r.split(">")[0].split("=")[0].split("<")[0].strip().lower().replace("-", "_") for r in reqs}

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    listed = fo.core.utils.load_requirements(path)
    assert names(declared) - {"fiftyone"} <= names(listed)

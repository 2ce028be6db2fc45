"""App input is untrusted (issue 18, cases 18-20): every run parameter has bounds, the
mask folder lies under a root the server allows, and local models come from allowed
roots, with one message for every path outside (nothing about the server's file system
shows). The form flags each (before Execute) and the run refuses the same parameters
(``fiftyone_faseg.limits``, one place); SDK calls keep free choice.
"""

import importlib.util
import math
import os
from pathlib import Path

import fiftyone as fo
import fiftyone.operators as foo
import pytest
from fiftyone.operators.executor import ExecutionContext

import fiftyone_faseg as ff
from fiftyone_faseg import limits
from fiftyone_faseg.constants import PLUGIN_NAME
from test_operators import RUN, drive, ds, errors, form, images, run_params  # noqa: F401 (ds, images: fixtures)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def roots(tmp_path, monkeypatch, tiny_sd_dir):
    """A server that allows models under ``models/`` (and the tiny checkpoint) and masks
    under ``masks/`` only."""
    allowed = dict(models=tmp_path / "models", masks=tmp_path / "masks")
    for folder in allowed.values():
        folder.mkdir()
    monkeypatch.setenv("FASEG_MODEL_ROOTS", os.pathsep.join([str(allowed["models"]), str(tiny_sd_dir)]))
    monkeypatch.setenv("FASEG_OUTPUT_ROOTS", str(allowed["masks"]))
    return allowed


def refused(ds, params, name):
    """The form flags ``name`` alone, the executed run refuses it (the operator's own
    check, not only FiftyOne's form validation) and nothing is written; returns the
    form's message."""
    found = errors(form(RUN, ds, params))
    assert list(found) == [name], found
    messages, error = drive(RUN, ds, params)
    assert isinstance(error, ValueError) and "`%s`" % name in str(error), error
    notes = [p for op, p in messages if op == "notify"]
    assert notes and notes[-1]["variant"] == "error" and name in notes[-1]["message"]
    with pytest.raises(Exception, match=name):
        foo.execute_operator(RUN, ctx=dict(view=ds.view(), params=params))
    assert "faseg" not in ds.get_field_schema()
    return found[name]


# ---------------------------------------------------------------------- case 18: bounds


@pytest.mark.parametrize("change, name, message", [
    (dict(batch_size=10**9), "batch_size", "at most 64"),
    (dict(batch_size=2.5), "batch_size", "whole number"),
    (dict(image_size=65536), "image_size", "128, 256, 512, 1024"),
    (dict(threshold=float("nan")), "threshold", "between 0 and 1"),
    (dict(classes=["c%d" % i for i in range(limits.MAX_CLASSES + 1)]), "classes", "At most 256 classes"),
    (dict(classes=["x" * (limits.MAX_CLASS_CHARS + 1)]), "classes", "at most 512 characters"),
    (dict(classes=[{"$gt": ""}]), "classes", "must be text"),
    (dict(pamr="yes"), "pamr", "true or false"),
    (dict(overrides={"threshold": float("nan")}), "threshold", "between 0 and 1"),  # sent inside overrides
])
def test_run_parameters_beyond_the_limits_are_flagged_and_refused(ds, tiny_sd_dir, change, name, message):
    assert errors(form(RUN, ds, run_params(tiny_sd_dir))) == {}
    assert message in refused(ds, run_params(tiny_sd_dir, **change), name)


@pytest.mark.parametrize("change, name, value", [
    (dict(device="tpu:0"), "device", "tpu:0"),
    (dict(dtype="float64"), "dtype", "float64"),
    # FA-Seg's own settings a script may send, flat or inside ``overrides``
    (dict(pamr_iterations=10**9), "pamr_iterations", "at most 100"),
    (dict(attention_chunk=2**40), "attention_chunk", "at most 1073741824"),
    (dict(overrides={"tau": 1000}), "tau", "at most 8"),
    (dict(pamr_dilations=[1] * 100), "pamr_dilations", "1 to 16"),
    (dict(self_weights={"64": 1e9}), "self_weights", "between 0 and 100"),
    (dict(attention_kernel="cuda"), "attention_kernel", "torch, triton"),
    (dict(overrides="tau=9"), "overrides", "mapping"),
])
def test_parameters_the_form_does_not_show_still_block_it(ds, tiny_sd_dir, change, name, value):
    params = run_params(tiny_sd_dir, **change)
    found = errors(form(RUN, ds, params))
    assert list(found) == ["limits_warning"] and name in found["limits_warning"], found
    messages, error = drive(RUN, ds, params)
    assert isinstance(error, ValueError) and "`%s`" % name in str(error) and value in str(error)


def test_every_fa_seg_setting_has_a_rule_and_the_papers_values_pass():
    from faseg_core.config import FASegConfig
    from fiftyone_faseg.run.settings import fa_seg_settings

    assert set(fa_seg_settings()) == set(limits.CONFIG_RULES)  # a new knob needs its range here
    paper = FASegConfig()
    values = {name: getattr(paper, name) for name in limits.CONFIG_RULES if getattr(paper, name) is not None}
    values["dtype"] = "float16"
    values["self_weights"] = {str(k): v for k, v in paper.self_weights.items()}  # as JSON sends them
    assert limits.problems(values) == {}
    assert limits.problems(dict(overrides=values)) == {}


def test_limits_keep_what_worked():
    # 300-character, unicode and ';' class names, the tagger's larger vocabularies, the paper's sizes
    ok = dict(classes=["ü" * 300, "🐱 cat", "a;b"], batch_size=64, image_size=1024, threshold=1,
              device="cuda:1", dtype="bfloat16", pamr=True)
    assert limits.problems(ok) == {}
    vocabulary = ["c%d" % i for i in range(1203)]  # LVIS
    assert limits.problems(dict(classes=vocabulary, classes_from="tagger")) == {}
    assert "classes" in limits.problems(dict(classes=vocabulary, classes_from="list"))
    assert limits.threshold_problem(math.inf) and limits.threshold_problem("0.5")


def test_the_form_limits_are_faseg_cores_choices():
    from faseg_core.config import DTYPES, FASegConfig

    assert limits.DTYPES == DTYPES
    for size in limits.IMAGE_SIZES:  # each size the form offers moves the paper's grids
        assert FASegConfig().at_image_size(size).image_size == size


def _zoo_module():
    spec = importlib.util.spec_from_file_location("faseg_zoo_source", ROOT / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_zoo_form_and_parameters_have_the_same_limits():
    zoo = _zoo_module()

    def props(remote_params):
        ctx = ExecutionContext(request_params=dict(params=dict(model="faseg-2rf", remote_params=remote_params)))
        return zoo.resolve_input("faseg-2rf", ctx).type.properties

    assert not any(p.invalid for p in props(dict(classes=["cat"], image_size=256)).values())
    bad = props(dict(classes=["cat"], image_size=65536, threshold=float("nan")))
    assert "128, 256, 512, 1024" in bad["image_size"].error_message and bad["threshold"].invalid
    with pytest.raises(ValueError, match="`image_size`: Image size must be one of"):
        zoo.parse_parameters("faseg-2rf", ExecutionContext(request_params={}), dict(classes=["cat"], image_size=65536))
    params = dict(classes=["cat"], image_size=256, threshold=None)
    zoo.parse_parameters("faseg-2rf", ExecutionContext(request_params={}), params)
    assert params == dict(classes=["cat"], image_size=256)
    # the field the zoo plugin's "Apply model" writes: the model keeps its pixel values
    params = dict(classes=["cat"])
    zoo.parse_parameters("faseg-2rf", ExecutionContext(request_params=dict(params=dict(label_field="zoo"))), params)
    assert params == dict(classes=["cat"], label_field="zoo")


# ---------------------------------------------------------------------- case 19: output_dir


def test_mask_folder_outside_the_allowed_roots_is_refused_with_one_message(ds, tiny_sd_dir, roots, tmp_path):
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "file.txt").write_text("x")
    (roots["masks"] / "escape").symlink_to(tmp_path / "outside", target_is_directory=True)
    candidates = {
        "a folder": tmp_path / "outside",
        "a file": tmp_path / "outside" / "file.txt",
        "missing": tmp_path / "outside" / "new",
        "dot-dot": "%s/../outside" % roots["masks"],
        "a symlink out": roots["masks"] / "escape" / "new",
        "the plugins folder": ROOT,
        "relative": "some/relative",
    }
    for what, folder in candidates.items():
        message = refused(ds, run_params(tiny_sd_dir, output_dir=str(folder)), "output_dir")
        assert message == limits.output_dir_problem(str(folder), ds)
        # one message whatever the path is: only the path itself differs
        assert message.replace(str(folder), "<dir>") == (
            "'<dir>' is not a folder this App may write to: choose a folder under '%s'" % roots["masks"]), what
    # the App's file picker sends {"absolute_path": ...}
    picked = dict(absolute_path=str(tmp_path / "outside"))
    assert "output_dir" in errors(form(RUN, ds, run_params(tiny_sd_dir, output_dir=picked)))


def test_mask_folder_under_an_allowed_root_runs_there(ds, tiny_sd_dir, roots):
    (roots["masks"] / "a-file").write_text("x")
    found = errors(form(RUN, ds, run_params(tiny_sd_dir, output_dir=str(roots["masks"] / "a-file"))))
    assert found == {"output_dir": "'%s' is a file: choose a folder" % (roots["masks"] / "a-file")}
    params = run_params(tiny_sd_dir, output_dir=str(roots["masks"] / "run"), view_target="SELECTED_SAMPLES")
    assert errors(form(RUN, ds, params)) == {}
    messages, error = drive(RUN, ds, params, selected=ds.limit(1).values("id"))
    assert error is None, error
    ds.reload()
    (path,) = ds.exists("faseg").values("faseg.mask_path")
    assert path.startswith(str(roots["masks"] / "run" / str(ds._doc.id)) + os.sep)


def test_default_mask_root_is_the_datasets_own_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("FASEG_OUTPUT_ROOTS")
    monkeypatch.setattr(fo.config, "default_dataset_dir", str(tmp_path / "fo"))
    monkeypatch.setattr(fo.app_config, "plugins", {})
    odd = fo.Dataset("../../appin-%d" % os.getpid())  # a name is no path: its slug is
    try:
        (root,) = limits.output_roots(odd)
        assert root == str(tmp_path / "fo" / odd.slug)
        assert limits.output_dir_problem(os.path.join(root, "masks"), odd) is None
        assert limits.output_dir_problem(str(tmp_path / "fo" / "other-dataset"), odd)
        assert limits.output_dir_problem(str(tmp_path / ("appin-%d" % os.getpid())), odd)
        # the plugin's setting in FiftyOne's App config, when no environment variable is set
        monkeypatch.setattr(fo.app_config, "plugins", {PLUGIN_NAME: {"output_roots": [str(tmp_path / "shared")]}})
        assert limits.output_roots(odd) == [str(tmp_path / "shared")]
        assert limits.output_dir_problem(str(tmp_path / "shared" / "x"), odd) is None
    finally:
        odd.delete()


def test_sdk_runs_keep_free_choice_of_folder(ds, tiny_faseg, roots, tmp_path):
    out = tmp_path / "anywhere"
    assert limits.output_dir_problem(str(out), ds)
    ff.segment_samples(ds.limit(1), classes=["cat"], segmenter=tiny_faseg, output_dir=str(out))
    assert ds.exists("faseg").first().faseg.mask_path.startswith(str(out) + os.sep)


# ---------------------------------------------------------------------- case 20: model_path


def test_model_paths_outside_the_allowed_roots_all_get_one_message(ds, tiny_sd_dir, roots, tmp_path):
    import shutil

    (tmp_path / "weights.bin").write_bytes(b"x")
    (tmp_path / "folder").mkdir()
    shutil.copytree(tiny_sd_dir, tmp_path / "checkpoint")
    candidates = {
        "a checkpoint": str(tmp_path / "checkpoint"), "a file": str(tmp_path / "weights.bin"),
        "a folder": str(tmp_path / "folder"), "missing": str(tmp_path / "missing"),
        "dot-dot": "%s/../folder" % roots["models"], "home": "~/.ssh", "relative": "not a model",
    }
    shown = set()
    for what, path in candidates.items():
        message = refused(ds, run_params(tiny_sd_dir, model_path=path), "model_path")
        shown.add(message.replace(path, "<path>"))
    assert shown == {"'<path>' is neither an existing folder nor a Hugging Face Hub id the App may load: give a Hub "
                     "id (owner/name) or a folder under '%s', '%s'" % (roots["models"], tiny_sd_dir)}
    # the same for the captioner and the tagger's files
    for name in ("captioner_path", "tagger_model", "tagger_pretrained"):
        file_, missing = limits.model_problem(str(tmp_path / "weights.bin"), name), \
            limits.model_problem(str(tmp_path / "missing"), name)
        assert file_ and file_.replace("weights.bin", "missing") == missing


def test_hub_ids_and_checkpoints_under_an_allowed_root_are_accepted(ds, tiny_sd_dir, roots, monkeypatch):
    import shutil

    checkpoint = roots["models"] / "tiny"
    shutil.copytree(tiny_sd_dir, checkpoint)
    (roots["models"] / "partial" / "unet").mkdir(parents=True)
    assert limits.model_problem(str(checkpoint)) is None
    assert limits.model_problem("XCLiu/2_rectified_flow_from_sd_1_5") is None
    assert limits.model_problem("ViT-B-16", "tagger_model") is None and limits.model_problem("openai", "tagger_pretrained") is None
    # under an allowed root the checkpoint's own problems may show
    assert "lacks vae/, text_encoder/, tokenizer/" in limits.model_problem(str(roots["models"] / "partial"))
    # a relative "owner/name" that exists on the server is a path, not a Hub id
    monkeypatch.chdir(roots["models"].parent)
    assert limits.model_problem("models/tiny") is None  # under the root
    (roots["models"].parent / "owner" / "name").mkdir(parents=True)
    assert "neither" in limits.model_problem("owner/name")
    assert "neither" in limits.model_problem("nobody/..")  # no Hub id climbs out of the working directory
    assert errors(form(RUN, ds, run_params(tiny_sd_dir, model_path=str(checkpoint)))) == {}


def test_sdk_loads_keep_free_choice_of_model(ds, tiny_sd_dir, roots, monkeypatch):
    monkeypatch.setenv("FASEG_MODEL_ROOTS", str(roots["models"]))
    assert limits.model_problem(str(tiny_sd_dir))  # outside the App's roots
    model = ff.FASegModel(model_path=str(tiny_sd_dir), classes=["cat"], image_size=128, device="cpu")
    ds.limit(1).apply_model(model, label_field="sdk")
    assert ds.count("sdk") == 1

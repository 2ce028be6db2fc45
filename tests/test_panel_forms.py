"""Safe defaults of the forms the FA-Seg panel leads to: classes split on commas and new
lines, immediate execution for a few selected samples, the last model path remembered and
checked offline, "Apply threshold" on the whole field (and a visible reason when a target
would mix thresholds), a sweep whose range covers its best value."""

import sys

import numpy as np
import pytest

import fiftyone as fo
import fiftyone.operators as foo
from fiftyone.operators.executor import ExecutionContext, _parse_ctx

from fiftyone_faseg.constants import DEFAULT_MODEL, operator_uri
from fiftyone_faseg.run.settings import RunRecord

N = 6


def _module(name):
    return sys.modules[type(foo.get_operator(operator_uri(name))).__module__]


def _form(name, ds, params, **kwargs):
    ctx = ExecutionContext(_parse_ctx(dataset=ds, params=params, **kwargs))
    return foo.get_operator(operator_uri(name)).resolve_input(ctx).type.properties


@pytest.fixture()
def ds(tmp_path):
    ds = fo.Dataset()
    ds.add_samples([fo.Sample(filepath=str(tmp_path / ("%d.png" % i)),
                              faseg=fo.Segmentation(mask=np.zeros((4, 4), np.uint8)),
                              faseg_scores="%d.npz" % i) for i in range(N)])
    ds.mask_targets = {"faseg": {1: "cat"}}
    ds.save()
    RunRecord(threshold=0.55).write(ds, "faseg")
    yield ds
    ds.delete()


def test_classes_split_on_commas_and_new_lines():
    forms = sys.modules[_module("run_faseg").__name__.rsplit(".", 1)[0] + ".forms"]
    assert forms.split_classes(["aeroplane, bird, sheep"]) == ["aeroplane", "bird", "sheep"]
    assert forms.split_classes(["cat", " dog ,cat", "cow\nhorse\n\n", ""]) == ["cat", "dog", "cow", "horse"]
    assert forms.split_classes("a,b") == ["a", "b"] and forms.split_classes(None) == []
    edited = _module("edit_candidates")._edited_classes
    assert edited({"classes": ["aeroplane, bird"], "new_classes": "sheep\ncow, bird"}) == \
        ["aeroplane", "bird", "sheep", "cow"]


def test_run_form_classes_and_immediate_execution_for_a_few_selected(ds, monkeypatch):
    run = _module("run_faseg")
    props = _form("run_faseg", ds, {"classes": ["aeroplane, bird, sheep"]})
    assert not props["classes"].invalid
    assert _form("run_faseg", ds, {"classes": [" , \n"]})["classes"].invalid

    monkeypatch.setattr(fo.config, "allow_legacy_orchestrators", True)  # a server that can schedule
    op = foo.get_operator(operator_uri("run_faseg"))
    ids = ds.values("id")
    options = lambda **kw: op.resolve_execution_options(ExecutionContext(_parse_ctx(dataset=ds, params={}, **kw)))
    assert N > run.IMMEDIATE_MAX_SAMPLES  # the dataset alone would be scheduled
    assert options().default_choice_to_delegated
    assert not options(selected=ids[:3]).default_choice_to_delegated  # three selected samples: run now
    assert options(selected=ids[: run.IMMEDIATE_MAX_SAMPLES + 1]).default_choice_to_delegated


def test_model_path_remembered_per_user_and_checked_offline(ds, tmp_path):
    forms = sys.modules[_module("run_faseg").__name__.rsplit(".", 1)[0] + ".forms"]
    folder = tmp_path / "model"
    for c in ("unet", "vae", "text_encoder", "tokenizer"):
        (folder / c).mkdir(parents=True)
    ctx = ExecutionContext(_parse_ctx(dataset=ds, params={}))
    forms.remember(ctx, "model_path", str(folder))
    try:
        props = _form("run_faseg", ds, {})
        assert props["model_path"].default == str(folder) and "model_path_offline" not in props

        # offline (the tests' HF_HUB_OFFLINE), a Hub id missing from the cache is said to be unreachable
        props = _form("run_faseg", ds, {"model_path": "nobody/no-such-faseg-model"})
        assert "not in the local Hugging Face cache" in props["model_path_offline"].view.description
        assert not props["model_path"].invalid
    finally:
        forms._settings_store().delete(forms._user_key(ctx, "model_path"))
    assert _form("run_faseg", ds, {})["model_path"].default == DEFAULT_MODEL


def test_rethreshold_targets_the_whole_field_and_says_why_not_a_part(ds):
    ids = ds.values("id")
    props = _form("rethreshold_faseg", ds, {"threshold": 0.8}, selected=ids[:2])
    assert props["view_target"].default == "DATASET" and "partial_field" not in props

    props = _form("rethreshold_faseg", ds, {"threshold": 0.8, "view_target": "SELECTED_SAMPLES"}, selected=ids[:2])
    assert props["partial_field"].invalid
    assert "4 other samples of 'faseg' were made at threshold 0.55" in props["partial_field"].view.label
    # at the field's own threshold nothing mixes
    props = _form("rethreshold_faseg", ds, {"threshold": 0.55, "view_target": "SELECTED_SAMPLES"}, selected=ids[:2])
    assert "partial_field" not in props


def test_sweep_range_covers_its_best_value():
    covering_sweep = _module("sweep_faseg_threshold").covering_sweep
    calls = []

    def measure(thresholds):
        calls.append(list(thresholds))
        return {t: 1 - (t - 0.9) ** 2 for t in thresholds}

    grid = [round(0.3 + 0.05 * i, 2) for i in range(11)]
    miou = covering_sweep(measure, grid, 0.05)
    best = max(miou, key=miou.get)
    assert best == pytest.approx(0.9) and min(miou) == 0.3 and max(miou) == pytest.approx(0.95)
    assert list(miou) == sorted(miou) and calls[0] == grid  # only the missing thresholds measured after
    assert all(t not in grid for t in calls[1])

    # a best value at the end of [0, 1] stays there
    miou = covering_sweep(lambda ts: {t: t for t in ts}, [0.9, 0.95, 1.0], 0.05)
    assert max(miou) == 1.0 and len(miou) == 3

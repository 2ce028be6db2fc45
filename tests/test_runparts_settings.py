"""RunSettings made of typed parts: flat keywords in and out, invalid choices refused when built."""

import dataclasses
import json
import pickle

import pytest

from faseg_core.config import FASegConfig
from fiftyone_faseg.distributed.engine import _parser as ray_parser
from fiftyone_faseg.protocol.cli import build_parser as protocol_parser
from fiftyone_faseg.run.parts import (CandidateClasses, ClassList, GroundTruthClasses, MaskTargetClasses,
                                      ModelSpec, OutputSpec, Overrides, TaggerClasses, WritePolicy)
from fiftyone_faseg.run.settings import RunRecord, RunSettings, scalar_config_fields


def test_flat_keywords_land_in_their_parts():
    s = RunSettings.from_kwargs(classes=[" cat ", "dog", ""], overwrite=True, threshold=0.5, pamr=True,
                                label_field="seg", output_dir={"absolute_path": "/tmp/x"}, store_scores=True,
                                model_path="a/b", dtype="float16", caption_field="cap", keep_classes=["dog", "cat"])
    assert s.classes == ClassList(names=("cat", "dog")) and s.classes.kind == "list"
    assert s.write is WritePolicy.OVERWRITE
    assert s.overrides == {"threshold": 0.5, "pamr": True}
    assert s.output == OutputSpec("seg", "/tmp/x", True, False, ("cat", "dog"))
    assert (s.model.model_path, s.model.dtype, s.prompt.caption_field) == ("a/b", "float16", "cap")
    assert RunSettings.from_kwargs(**s.to_kwargs()) == s


def test_each_class_source_holds_only_what_it_uses():
    assert RunSettings.from_kwargs(classes_from="gt_field", gt_field="gt").classes == GroundTruthClasses("gt")
    assert RunSettings.from_kwargs(classes_from="mask_targets", gt_field="gt").classes == MaskTargetClasses("gt")
    tagger = RunSettings.from_kwargs(classes_from="tagger", classes=["a"]).classes
    assert tagger == TaggerClasses(names=("a",)) and tagger.gt_field is None
    cands = RunSettings.from_kwargs(classes_from="candidates", classes_field="mine", gt_field="gt").classes
    assert cands == CandidateClasses("mine", "gt") and cands.names == ()
    assert RunSettings.from_kwargs(threshold=0.4).classes is None  # builds a config; a run refuses it
    with pytest.raises(ValueError, match="needs gt_field"):
        RunSettings.from_kwargs(classes_from="mask_targets")
    with pytest.raises(ValueError, match="needs classes="):
        ClassList(names=["  "])
    with pytest.raises(ValueError, match=r"does not use \['classes_field'\]"):
        RunSettings.from_kwargs(classes=["cat"], classes_field="x")
    with pytest.raises(ValueError, match="unknown classes_from 'sky'"):
        RunSettings.from_kwargs(classes_from="sky")
    with pytest.raises(ValueError, match="no candidate classes"):
        RunSettings.from_kwargs(gt_field="gt")
    with pytest.raises(TypeError, match="not the string"):
        RunSettings.from_kwargs(classes="cat")


def test_form_params_drop_what_the_chosen_source_does_not_use():
    # a form keeps values of inputs it no longer shows
    s = RunSettings.from_params({"classes_from": "gt_field", "gt_field": "gt", "classes": ["cat"],
                                 "tagger_model": "ViT-B-32", "tagger_pretrained": "", "view_target": "X"})
    assert s.classes == GroundTruthClasses("gt")
    assert s.model.tagger_model[0] == "ViT-B-32"


def test_write_policy_is_one_value():
    assert RunSettings.from_kwargs(skip_existing=True).write is WritePolicy.SKIP_EXISTING
    assert RunSettings.from_kwargs().write is WritePolicy.NEW
    with pytest.raises(ValueError, match="choose one"):
        RunSettings.from_kwargs(skip_existing=True, overwrite=True)
    assert RunSettings(write="overwrite").write is WritePolicy.OVERWRITE


def test_parts_are_checked_when_built():
    with pytest.raises(TypeError, match="from_kwargs"):
        RunSettings(classes=["cat"])
    with pytest.raises(TypeError, match="not_a_knob"):
        Overrides({"not_a_knob": 1})
    with pytest.raises(ValueError, match="batch_size"):
        Overrides({"batch_size": 1.5})
    with pytest.raises(ValueError, match="tagger_model"):
        ModelSpec(tagger_model=("only-one",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        RunSettings().output.label_field = "x"


def test_json_round_trip_and_replace():
    s = RunSettings.from_kwargs(classes_from="tagger", classes=["cat"], gt_field="gt", pamr_dilations=(1, 2),
                                overrides={"dtype": "float16"}, dtype="bfloat16", heatmap=True)
    params = json.loads(json.dumps(s.to_params()))
    back = RunSettings.from_params(params)
    assert back == s and back.overrides["pamr_dilations"] == (1, 2)
    assert (back.model.dtype, back.overrides["dtype"]) == ("bfloat16", "float16")  # same name, two parts
    assert pickle.loads(pickle.dumps(s)) == s
    moved = s.replace(threshold=0.3, label_field="other")
    assert moved.overrides["threshold"] == 0.3 and moved.output.label_field == "other"
    assert moved.classes == s.classes and s.overrides.get("threshold") is None


def test_record_is_a_snapshot_of_the_parts():
    s = RunSettings.from_kwargs(classes=["cat"], keep_classes=["cat"], store_scores=True, flip=False,
                                batch_size=2, image_size=256, model_path="a/b")
    config = s.overrides.apply(FASegConfig())
    record = RunRecord.snapshot(s, config, "/root")
    assert (record.threshold, record.image_size, record.model_path, record.pamr) == (0.55, 256, "a/b", False)
    assert (record.classes, record.classes_from, record.class_list) == (["cat"], "list", ["cat"])
    assert record.config == {"flip": False} and record.store_scores and record.root == "/root"
    assert not record.differences(RunRecord.snapshot(s.replace(batch_size=4), config, "/other"))


def test_both_command_lines_take_every_scalar_knob():
    knobs = scalar_config_fields()
    assert {"threshold", "flip", "pamr_iterations", "seed", "pamr"} <= set(knobs)
    ray = vars(ray_parser().parse_args(["ds", "--no-flip", "--seed", "0", "--overwrite", "--keep-classes", "a"]))
    assert (ray["flip"], ray["seed"], ray["overwrite"], ray["keep_classes"]) == (False, 0, True, ["a"])
    proto = vars(protocol_parser().parse_args(["voc", "--root", "r", "--no-flip", "--pamr-iterations", "3",
                                               "--threshold", "0.4", "--dtype", "float16"]))
    assert (proto["flip"], proto["pamr_iterations"], proto["threshold"], proto["dtype"]) == (False, 3, 0.4, "float16")
    assert set(knobs) - {"dtype"} <= set(proto)


def test_a_rerun_reads_the_parts_back_from_a_record_old_or_new():
    s = RunSettings.from_kwargs(classes=["cat"], keep_classes=["cat"], heatmap=True, flip=False, threshold=0.4,
                                output_dir="/tmp/o")
    record = RunRecord.snapshot(s, s.overrides.apply(FASegConfig()), "/root")
    assert record.output_spec("seg") == dataclasses.replace(s.output, label_field="seg")
    assert record.overrides() == {"flip": False, "threshold": 0.4, "image_size": 512, "pamr": False}
    # a record stored before ``config``, ``classes`` and ``heatmap`` existed
    old = RunRecord(**{"threshold": 0.5, "image_size": 512, "model_path": "a/b", "pamr": True, "output_dir": None,
                       "store_scores": True, "root": "/r", "revision": "x"})
    assert old.output_spec("f") == OutputSpec("f", None, True, False, None)
    assert old.overrides() == {"threshold": 0.5, "image_size": 512, "pamr": True}


def test_a_new_fasegconfig_knob_reaches_every_entry_point_with_one_edit(monkeypatch):
    # the walk-through of settings.py's "Adding a setting": one new FASegConfig field, nothing else
    import faseg_core.config

    from fiftyone_faseg.run.model import FASegModelConfig
    from fiftyone_faseg.run.settings import recorded_config

    extended = dataclasses.make_dataclass("FASegConfig", [("edge_sigma", float, 0.0)], bases=(FASegConfig,),
                                          frozen=True)
    monkeypatch.setattr(faseg_core.config, "FASegConfig", extended)
    s = RunSettings.from_kwargs(classes=["cat"], edge_sigma=0.3)
    assert s.overrides.apply().edge_sigma == 0.3
    assert RunSettings.from_params(json.loads(json.dumps(s.to_params()))) == s
    record = RunRecord.snapshot(s, s.overrides.apply(), "/r")
    assert record.config == {"edge_sigma": 0.3} == recorded_config(s.overrides)
    assert FASegModelConfig({"classes": ["cat"], "edge_sigma": 0.3}).run_config().edge_sigma == 0.3
    assert vars(ray_parser().parse_args(["ds", "--edge-sigma", "0.3"]))["edge_sigma"] == 0.3
    assert vars(protocol_parser().parse_args(["voc", "--root", "r", "--edge-sigma", "0.3"]))["edge_sigma"] == 0.3

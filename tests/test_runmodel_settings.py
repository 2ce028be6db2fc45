"""One list of FA-Seg's settings: FASegConfig's fields, taken by every entry point."""

import pickle

import pytest

from faseg_core.config import FASegConfig
from fiftyone_faseg.distributed.engine import _parser
from fiftyone_faseg.run.model import FASegModelConfig
from fiftyone_faseg.run.plan import run_config
from fiftyone_faseg.protocol.harness import make_config
from fiftyone_faseg.run.settings import RunRecord, RunSettings, recorded_config


def test_any_fasegconfig_field_is_a_run_setting_keyword():
    s = RunSettings.from_kwargs(threshold=0.4, flip=False, pamr_iterations=3)
    assert s.overrides == {"threshold": 0.4, "flip": False, "pamr_iterations": 3}
    assert (s.overrides["threshold"], s.overrides["flip"], s.overrides.get("batch_size")) == (0.4, False, None)
    assert s.replace(batch_size=2).overrides == {**s.overrides, "batch_size": 2}
    assert RunSettings.from_params(s.to_params()) == s
    assert RunSettings.from_kwargs(**{"pamr_iterations": 3, "flip": False, "threshold": 0.4}) == s
    assert pickle.loads(pickle.dumps(s)) == s
    config = run_config(s)
    assert (config.threshold, config.flip, config.pamr_iterations) == (0.4, False, 3)


def test_unknown_settings_are_refused_naming_them():
    with pytest.raises(TypeError, match="tresh"):
        RunSettings.from_kwargs(tresh=0.4)
    with pytest.raises(TypeError, match="not_a_knob"):
        RunSettings(overrides={"not_a_knob": 1})


def test_model_harness_and_runs_build_the_same_config():
    overrides = {"threshold": 0.35, "image_size": 256, "flip": False}
    run = run_config(RunSettings.from_kwargs(**overrides), FASegConfig.for_dataset("voc"))
    assert make_config("voc", **overrides) == run
    assert FASegModelConfig(overrides).run_config(FASegConfig.for_dataset("voc")) == run
    assert run.image_size == 256 and run.cross_weights == FASegConfig().at_image_size(256).cross_weights


def test_ray_command_line_takes_every_scalar_knob():
    args = vars(_parser().parse_args(["ds", "--threshold", "0.4", "--no-flip", "--pamr-iterations", "3"]))
    assert (args["threshold"], args["flip"], args["pamr_iterations"]) == (0.4, False, 3)
    assert "overrides" not in args


def test_record_keeps_knobs_that_change_pixels_and_reads_old_records_alike():
    assert recorded_config({"batch_size": 8, "threshold": 0.4, "compile": True}) is None
    made = RunRecord(threshold=0.4, config=recorded_config({"flip": False, "pamr_dilations": (1, 2)}))
    assert made.config == {"flip": False, "pamr_dilations": [1, 2]}
    assert set(made.differences(RunRecord(threshold=0.4))) == {"config"}
    # a record written before ``config`` existed (no key) equals a plain run's
    assert not RunRecord(threshold=0.4).differences(RunRecord(threshold=0.4, config=recorded_config({})))


def test_protocol_records_each_knob_that_changes_pixels():
    assert recorded_config({"pamr": True, "batch_size": 2}, own=()) == {"pamr": True}
    assert recorded_config({"pamr": True, "batch_size": 2}) is None  # RunRecord has its own pamr

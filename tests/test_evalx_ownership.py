"""Issue 18, cases 11-14: an evaluation's outputs (fields, saved view, index, mask_targets)
are owned by its record, not by their names; label ids are fresh ObjectIds.

Real embedded MongoDB, unnamed datasets; the masks are the hand-checked 4×6 example of
test_evaluation_outputs.py.
"""

import time
import warnings

import numpy as np
import pytest

import fiftyone as fo
import fiftyone.core.labels as fol

import fiftyone_faseg.evaluation as ffe
from fiftyone_faseg.evaluation.per_sample import _label_id
from fiftyone_faseg.run.settings import RunRecord

from test_evaluation_outputs import GT, GT_TARGETS, PRED, PRED_TARGETS, _sample

pytestmark = pytest.mark.filterwarnings("ignore:.*samples without a")


@pytest.fixture()
def ds(tmp_path):
    dataset = fo.Dataset()
    dataset.add_samples([_sample(tmp_path, "a", GT, PRED), _sample(tmp_path, "b", GT, GT)])
    dataset.mask_targets = {"ground_truth": GT_TARGETS, "faseg": PRED_TARGETS}
    dataset.save()
    yield dataset
    dataset.delete()


def _user_segmentation_field(ds, name, targets):
    """A field made by someone else (here: as an FA-Seg run marks its field), with masks and
    mask_targets."""
    for sample in ds:
        sample[name] = fol.Segmentation(mask=np.ones((2, 2), np.uint8))
        sample.save()
    RunRecord(threshold=0.5).write(ds, name)
    ds.mask_targets[name] = targets
    ds.save()


def test_case11_label_ids_are_fresh_object_ids(monkeypatch):
    first = _label_id("Classification")["_id"]
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + 1000)  # a long-lived process, later on
    later = _label_id("Classification")["_id"]
    # a fixed per-process prefix kept the first timestamp (and repeated after 2^24 ids)
    assert later.generation_time.timestamp() - first.generation_time.timestamp() >= 999
    ids = {_label_id("Segmentation")["_id"] for _ in range(20000)}
    assert len(ids) == 20000


def test_case12_a_foreign_field_is_refused_before_any_change_and_never_deleted(ds):
    ffe.evaluate_faseg(ds, "faseg", eval_key="ev", per_class=False, error_masks=False, threshold_curve=False)
    _user_segmentation_field(ds, "ev_errors", {1: "mine"})
    before = ds.values("ev_errors.mask"), ds.get_evaluation_info("ev").timestamp

    with pytest.raises(ValueError, match="field 'ev_errors' exists and does not belong to evaluation 'ev'"):
        ffe.evaluate_faseg(ds, "faseg", eval_key="ev", threshold_curve=False)
    # nothing changed: the old evaluation, the user's field and its mask_targets
    assert ds.get_evaluation_info("ev").timestamp == before[1]
    assert all((a == b).all() for a, b in zip(ds.values("ev_errors.mask"), before[0]))
    assert ds.mask_targets["ev_errors"] == {1: "mine"}
    assert not ds.has_sample_field("ev_classes")

    ds.delete_evaluation("ev")
    assert ds.has_sample_field("ev_errors") and ds.mask_targets["ev_errors"] == {1: "mine"}
    assert not ds.has_sample_field("ev_miou")


def test_case12_foreign_mask_targets_are_refused(ds):
    ds.mask_targets["ev_errors"] = {1: "someone's"}
    ds.save()
    with pytest.raises(ValueError, match=r"mask_targets\['ev_errors'\] exists and does not belong"):
        ffe.evaluate_faseg(ds, "faseg", eval_key="ev", threshold_curve=False)
    assert "ev" not in ds.list_evaluations() and ds.mask_targets["ev_errors"] == {1: "someone's"}


def test_case13_rename_into_colliding_names_renames_nothing_and_deletes_only_its_own(ds):
    ffe.evaluate_faseg(ds, "faseg", eval_key="ev", threshold_curve=False)
    owned = sorted(n for n in ds.get_field_schema() if n.startswith("ev_"))
    _user_segmentation_field(ds, "ev2_errors", {1: "mine"})

    with pytest.warns(UserWarning, match="'ev2_errors'.*Rename or delete"):
        ds.rename_evaluation("ev", "ev2")
    assert ds.list_evaluations() == ["ev2"]
    # every output kept its name, marked and recorded as ev2's; the user's field is untouched
    assert sorted(n for n in ds.get_field_schema() if n.startswith("ev_")) == owned
    assert all(ds.get_field(n).info["faseg_eval"] == {"eval_key": "ev2"} for n in owned)
    assert ds.mask_targets["ev2_errors"] == {1: "mine"} and ds.mask_targets["ev_errors"][3] == "missed"
    assert ds.list_saved_views() == ["ev_worst"] and "ev_miou" in ds.list_indexes()
    # the renamed evaluation still works from what it recorded
    assert len(ffe.class_view(ds, "ev2", "cat")) == 2
    assert ffe.evaluation_summary(ds, "ev2")["miou"] == pytest.approx(ds.load_evaluation_results("ev2").miou)

    ds.delete_evaluation("ev2")
    assert not any(n.startswith("ev_") for n in ds.get_field_schema())  # nothing orphaned
    assert ds.has_sample_field("ev2_errors") and ds.mask_targets["ev2_errors"] == {1: "mine"}
    assert "ev_errors" not in ds.mask_targets and ds.list_saved_views() == []
    assert not any(i.startswith("ev_") for i in ds.list_indexes())


def test_case13_rename_without_collision_moves_everything(ds):
    ffe.evaluate_faseg(ds, "faseg", eval_key="ev", threshold_curve=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds.rename_evaluation("ev", "ev2")
    assert not any(n.startswith("ev_") for n in ds.get_field_schema())
    assert ds.get_evaluation_info("ev2").config.outputs["errors"] == "ev2_errors"
    assert ds.list_saved_views() == ["ev2_worst"] and "ev2_miou" in ds.list_indexes()
    # the renamed key can evaluate again into its own outputs
    ffe.evaluate_faseg(ds, "faseg", eval_key="ev2", threshold_curve=False)
    assert ds.count("ev2_miou") == 2


def test_case14_a_users_saved_view_is_never_replaced_nor_deleted(ds):
    mine = ds.match(fo.ViewField("filepath").ends_with("b.png"))
    ds.save_view("ev_worst", mine, description="mine")
    with pytest.raises(ValueError, match="saved view 'ev_worst' exists and does not belong to evaluation 'ev'"):
        ffe.evaluate_faseg(ds, "faseg", eval_key="ev", threshold_curve=False)
    assert "ev" not in ds.list_evaluations() and not ds.has_sample_field("ev_miou")
    assert ds.get_saved_view_info("ev_worst")["description"] == "mine"

    # the panel helper's form check says so too
    names = ffe.outputs.output_names("ev")
    with pytest.raises(ValueError, match="saved view 'ev_worst'"):
        ffe.outputs.check_free(ds, "ev", names, reads=("faseg", "ground_truth"))

    ffe.evaluate_faseg(ds, "faseg", eval_key="other", threshold_curve=False)
    ds.delete_evaluation("other")
    assert ds.get_saved_view_info("ev_worst")["description"] == "mine" and len(ds.load_saved_view("ev_worst")) == 1


def test_records_of_older_versions_own_what_their_key_and_settings_name(ds):
    """Before outputs were recorded (and fields marked), a record owned the names its key and
    settings give: re-evaluating, renaming and deleting it still touch only those."""
    ffe.evaluate_faseg(ds, "faseg", eval_key="ev", error_masks=False, threshold_curve=False)
    info = ds.get_evaluation_info("ev")
    config = info.config
    for name in ("outputs", "worst_view", "indexes"):
        delattr(config, name)
    config.classes, config.num_gt_classes = ["background", "cat", "dog"], 3  # as older configs stored
    ffe.FASegEvaluation.update_run_config(ds, "ev", config)
    for name in ds.get_field_schema():
        if name.startswith("ev_"):
            field = ds.get_field(name)
            field.info = {}
            field.save()
    _user_segmentation_field(ds, "ev_errors", {1: "mine"})  # not a name that record gives

    assert ffe.evaluation_summary(ds, "ev")["miou"] is not None
    with pytest.raises(ValueError, match="field 'ev_errors' exists and does not belong to evaluation 'ev'"):
        ffe.evaluate_faseg(ds, "faseg", eval_key="ev", threshold_curve=False)
    ffe.reevaluate_faseg(ds, "ev")  # its own settings: error_masks=False
    assert ds.get_field("ev_miou").info["faseg_eval"] == {"eval_key": "ev"}
    ds.delete_evaluation("ev")
    assert sorted(n for n in ds.get_field_schema() if n.startswith("ev_")) == ["ev_errors"]
    assert ds.mask_targets["ev_errors"] == {1: "mine"} and ds.list_saved_views() == []

"""Labels ``FASegModel`` writes through ``apply_model`` carry a marker (``faseg_model``: the
model path), so the evaluate form never offers their field as ground truth."""

import numpy as np
import pytest

import fiftyone as fo
import fiftyone.operators as foo
from fiftyone.operators.executor import ExecutionContext, _parse_ctx

import fiftyone_faseg as ff
from fiftyone_faseg.constants import operator_uri
from fiftyone_faseg.fields import MODEL_ATTR, ground_truth_fields, made_by_faseg_model


@pytest.fixture()
def ds(tmp_path, stub_faseg, tiny_sd_dir):
    from images import write_image

    ds = fo.Dataset()
    samples = []
    for i in range(3):
        gt = np.zeros((40, 60), np.uint8)
        gt[10:20, 20:] = 1 + i % 2
        samples.append(fo.Sample(filepath=write_image(tmp_path / ("%d.png" % i), 40, 60, i),
                                 ground_truth=fo.Segmentation(mask=gt),
                                 user_masks=fo.Segmentation(mask=np.roll(gt, 3, axis=1))))
    ds.add_samples(samples)
    ds.mask_targets = {"ground_truth": {1: "cat", 2: "dog"}, "user_masks": {1: "cat", 2: "dog"}}
    ds.save()
    model = ff.FASegModel(model_path=str(tiny_sd_dir), classes=["cat", "dog"], label_field="zoo")
    model._segmenter = stub_faseg  # the model is not under test: the stub, as runs use it in tests
    ds.apply_model(model, label_field="zoo", batch_size=2)
    yield ds
    ds.delete()


def _gt_choices(ds, pred_field):
    ctx = ExecutionContext(_parse_ctx(dataset=ds, params={"pred_field": pred_field}))
    props = foo.get_operator(operator_uri("evaluate_faseg")).resolve_input(ctx).type.properties
    return list(props["gt_field"].type.values)


def test_zoo_labels_are_marked_and_never_offered_as_ground_truth(ds, tiny_sd_dir):
    assert ds.count("zoo") == 3 and ds.mask_targets["zoo"]
    assert ds.values("zoo." + MODEL_ATTR) == [str(tiny_sd_dir)] * 3
    assert not (ds.get_field("zoo").info or {})  # apply_model's field: nothing else marks it
    assert made_by_faseg_model(ds, "zoo")
    assert not made_by_faseg_model(ds, "ground_truth") and not made_by_faseg_model(ds, "user_masks")

    # evaluating the user's own masks: the zoo field is not ground truth, the real one is first
    assert _gt_choices(ds, "user_masks") == ["ground_truth"]
    # evaluating the zoo field: the real ground truth first, then the user's masks
    assert _gt_choices(ds, "zoo") == ["ground_truth", "user_masks"]
    assert "zoo" not in ground_truth_fields(ds)

    # the marker decides: a copy keeps it; the same labels without it are a field like any other
    ds.clone_sample_field("zoo", "copied")
    ds.mask_targets["copied"] = ds.mask_targets["zoo"]
    ds.save()
    assert "copied" not in _gt_choices(ds, "user_masks")
    for sample in ds:
        del sample.copied[MODEL_ATTR]
        sample.save()
    assert not made_by_faseg_model(ds, "copied") and "copied" in _gt_choices(ds, "user_masks")

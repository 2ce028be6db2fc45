"""One class-name canonicaliser (fiftyone_faseg.matching.normalize) for matching, shared pixel
values and the background's name."""

import fiftyone as fo

from fiftyone_faseg.run.classes import assign_ids, gt_classes
from fiftyone_faseg.matching import match_classes, normalize
from fiftyone_faseg.run.targets import claim_values


def test_every_use_compares_names_the_same_way():
    assert normalize("  Dining \t Table ") == "dining table"
    gt = {5: "Dining  Table", 2: "cat"}
    # matching, the values a run shares with the ground truth, and the background
    assert match_classes(gt, {1: "dining table", 2: "CAT"})["pred_values"] == [[0, 0], [1, 2], [2, 1]]
    assert assign_ids(["dining table", "dog"], preferred=gt) == {"dining table": 5, "dog": 1}

    ds = fo.Dataset()
    try:
        ds.add_sample(fo.Sample(filepath="/tmp/x.png", gt=fo.Segmentation(mask_path="/tmp/x.png")))
        ds.mask_targets = {"gt": {**gt, 7: " Background"}}
        ds.save()
        assert gt_classes(ds, "gt") == gt
        assert claim_values(ds, "seg", ["dining table", "dog"], preferred=gt) == {"dining table": 5, "dog": 1}
    finally:
        ds.delete()

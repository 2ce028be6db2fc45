"""One unit for mIoU wherever a person reads it: the FA-Seg panel, the per-sample
``<eval_key>_miou`` field (and a filter on it) and the ``miou`` metric of the results (what
FiftyOne's Model Evaluation panel shows) give the same number, in percent."""

import re
import sys

import numpy as np
import pytest

import fiftyone as fo
import fiftyone.operators as foo
from fiftyone import ViewField as F

import fiftyone_faseg.evaluation as ffe
from fiftyone_faseg.constants import operator_uri

N = 6


def _panel():
    return sys.modules[type(foo.get_operator(operator_uri("evaluate_faseg"))).__module__.rsplit(".", 1)[0] + ".panel"]


@pytest.fixture()
def ds():
    ds = fo.Dataset()
    samples = []
    for i in range(N):
        gt = np.zeros((30, 80), np.uint8)
        gt[3:27, 5:40] = 1 + i % 2
        pred = np.roll(gt, 7 * i, axis=1)  # worse and worse
        samples.append(fo.Sample(filepath="/tmp/units-%d.png" % i, ground_truth=fo.Segmentation(mask=gt),
                                 faseg=fo.Segmentation(mask=pred)))
    ds.add_samples(samples)
    ds.mask_targets = {"ground_truth": {1: "cat", 2: "dog"}, "faseg": {1: "cat", 2: "dog"}}
    ds.save()
    yield ds
    ds.delete()


def _shown(header):
    """The mIoU the panel's header shows, in percent."""
    return float(re.search(r"\*\*mIoU ([\d.]+) %\*\*", header).group(1))


def test_panel_field_and_metric_agree_in_percent(ds):
    whole = ffe.evaluate_faseg(ds, "faseg", eval_key="ev")
    state, _ = _panel().panel_model(ds, "ev")
    assert _shown(state["header"]) == pytest.approx(round(100 * whole.miou, 1))
    assert whole.metrics()["miou"] == pytest.approx(100 * whole.miou, abs=1e-9)
    assert whole.custom_metrics[ffe.MIOU_METRIC_URI]["label"] == "mIoU (%)"
    assert "percent" in ds.get_field("ev_miou").description
    assert "(0-1)" in ds.get_field("ev_accuracy").description  # FiftyOne's own, as FiftyOne defines it

    fields = ds.values("ev_miou")
    below = 0
    for i, value in enumerate(fields):
        one = ffe.evaluate_faseg(ds.skip(i).limit(1), "faseg", eval_key="one", threshold_curve=False)
        state, _ = _panel().panel_model(ds, "one")
        assert value == pytest.approx(one.metrics()["miou"], abs=1e-9)  # the field is the sample's metric
        assert _shown(state["header"]) == pytest.approx(round(value, 1))  # as the panel shows it
        below += _shown(state["header"]) < 30
    assert 0 < below < N, fields  # the filter a curator writes from what the panel says
    assert len(ds.match(F("ev_miou") < 30)) == below

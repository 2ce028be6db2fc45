"""Progress with counts on immediate runs, without losing the result: ``evaluate_faseg`` and
``rethreshold_faseg`` driven as the App server drives them (its requests name the
operator; it streams a generator's messages: counts, then the results shown in the same
dialog), as the SDK's ``execute_operator`` drives them (the result comes back), and
delegated (the counts are the run's heartbeat, the result is kept)."""

import sys

import numpy as np
import pytest

import fiftyone as fo
import fiftyone.operators as foo
from fiftyone.operators.delegated import DelegatedOperationService
from fiftyone.operators.executor import ExecutionContext, Executor
from fiftyone.operators.message import GeneratedMessage

import fiftyone_faseg as ff
from fiftyone_faseg.constants import operator_uri

N = 12
EVALUATE, RETHRESHOLD = operator_uri("evaluate_faseg"), operator_uri("rethreshold_faseg")


def _forms():
    module = sys.modules[type(foo.get_operator(EVALUATE)).__module__]
    return sys.modules[module.__name__.rsplit(".", 1)[0] + ".forms"]


@pytest.fixture(scope="module")
def scored(stub_faseg, tiny_sd_dir, tmp_path_factory):
    """N images with ground truth, segmented with stored scores (the stub segmenter)."""
    from images import write_image

    folder = tmp_path_factory.mktemp("progress")
    ds = fo.Dataset()
    samples = []
    for i in range(N):
        gt = np.zeros((40, 60), np.uint8)
        gt[10:30, 5 + 2 * i : 30 + 2 * i] = 1 + i % 2
        samples.append(fo.Sample(filepath=write_image(folder / ("%d.png" % i), 40, 60, i),
                                 ground_truth=fo.Segmentation(mask=gt)))
    ds.add_samples(samples)
    ds.mask_targets = {"ground_truth": {1: "cat", 2: "dog"}}
    ds.save()
    ff.segment_samples(ds, classes=["cat", "dog"], segmenter=stub_faseg, model_path=str(tiny_sd_dir),
                       store_scores=True, threshold=0.55, batch_size=4)
    yield ds
    ds.delete()


def _from_app(ds, uri, params):
    """The context the App server builds from an App request (which names the operator)."""
    return ExecutionContext(
        request_params=dict(dataset_name=ds.name, view=ds.view()._serialize(), params=dict(params),
                            operator_uri=uri),
        executor=Executor(), operator_uri=uri)


def _stream(ds, uri, params):
    """The lines the App server streams: ``[(cls, body)]`` (a set_progress trigger is
    ``("InvocationRequest", {"operator_uri": "set_progress", ...})``)."""
    result = foo.get_operator(uri).execute(_from_app(ds, uri, params))
    assert not isinstance(result, dict), "an App run must stream (a generator)"
    lines = []
    for message in result:
        assert isinstance(message, GeneratedMessage)
        data = message.to_json()  # what goes over the wire
        lines.append((data["cls"], data["body"]))
    return lines


def _progress(lines):
    return [(b["params"]["label"], b["params"]["progress"]) for c, b in lines
            if c == "InvocationRequest" and b["operator_uri"] == "set_progress"]


def _triggered(lines):
    return [b["operator_uri"] for c, b in lines if c == "InvocationRequest" and b["operator_uri"] != "set_progress"]


def _shown(lines):
    """The results the run's last message shows in the App's output dialog, checked
    against the operator's summary view of them."""
    cls, body = lines[-1]
    assert cls == "InvocationRequest" and body["operator_uri"] == "show_output", lines[-1]
    outputs = body["params"]["outputs"]
    assert outputs["view"]["label"].endswith("complete") and outputs["type"]["properties"]
    return body["params"]["results"]


def test_evaluate_streams_counts_then_its_result(scored, monkeypatch):
    params = dict(pred_field="faseg", gt_field="ground_truth", eval_key="ev", view_target="DATASET")
    monkeypatch.setattr(_forms(), "PROGRESS_APP_S", 0.0)  # every step, to see each count
    lines = _stream(scored, EVALUATE, params)
    steps = _progress(lines)
    counts = [label for label, _ in steps]
    assert counts[-N:] == ["Evaluated %d / %d samples" % (k, N) for k in range(1, N + 1)], counts
    assert [p for _, p in steps[-N:]] == pytest.approx([k / N for k in range(1, N + 1)])
    assert "reload_dataset" in _triggered(lines)
    streamed = _shown(lines)
    assert streamed["samples"] == "%d of %d" % (N, N) and streamed["eval_key"] == "ev"

    # the SDK gets the same result back (it exhausts generators: a streamed one would be lost)
    sdk = foo.execute_operator(EVALUATE, ctx=dict(dataset=scored, view=scored.view(), params=params))
    sdk.raise_exceptions()
    assert sdk.result == streamed
    assert sdk.result["miou_value"] == pytest.approx(scored.load_evaluation_results("ev").miou, abs=1e-12)

    # throttled as in production: still the final count
    monkeypatch.undo()
    assert _progress(_stream(scored, EVALUATE, params))[-1] == ("Evaluated %d / %d samples" % (N, N), 1.0)


def test_a_failed_streamed_run_notifies_then_fails(scored):
    params = dict(pred_field="faseg", gt_field="ground_truth", eval_key="bad key", view_target="DATASET")
    result = foo.get_operator(EVALUATE).execute(_from_app(scored, EVALUATE, params))
    lines = []
    with pytest.raises(ValueError, match="eval_key must be a valid Python identifier"):
        for message in result:
            lines.append(message.to_json())
    notes = [m["body"]["params"] for m in lines if m["body"]["operator_uri"] == "notify"]
    assert notes and notes[-1]["variant"] == "error"
    assert notes[-1]["message"].startswith("FA-Seg: evaluate segmentations (mIoU) failed: eval_key must be")
    assert "bad key" not in scored.list_evaluations()


def test_rethreshold_streams_counts_then_its_result(scored):
    params = dict(label_field="faseg", threshold=0.7, out_field="faseg_07", view_target="DATASET")
    lines = _stream(scored, RETHRESHOLD, params)
    assert _progress(lines)[-1] == ("Re-thresholded %d / %d samples" % (N, N), 1.0)
    assert "reload_dataset" in _triggered(lines)
    streamed = _shown(lines)
    assert streamed["written"] == N and streamed["field"] == "faseg_07"
    assert scored.count("faseg_07") == N

    sdk = foo.execute_operator(RETHRESHOLD, ctx=dict(dataset=scored, view=scored.view(),
                                                     params=dict(params, out_field="faseg_08", threshold=0.8)))
    sdk.raise_exceptions()
    assert sdk.result["written"] == N and sdk.result["field"] == "faseg_08"


def test_delegated_heartbeat_has_the_counts(scored):
    params = dict(pred_field="faseg", gt_field="ground_truth", eval_key="queued", view_target="DATASET")
    foo.execute_operator(EVALUATE, ctx=dict(dataset=scored, view=scored.view(), params=params),
                         request_delegation=True)
    service = DelegatedOperationService()
    service.execute_queued_operations(dataset_name=scored.name)
    (op,) = [o for o in service.list_operations(dataset_name=scored.name) if o.operator == EVALUATE]
    assert op.status.label == "Evaluated %d / %d samples" % (N, N) and op.status.progress == 1.0
    assert op.result.result["eval_key"] == "queued"  # a delegated run keeps its result too

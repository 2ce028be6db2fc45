"""One writer per field (issue 18, cases 3 and 4): the field's lease in the database.

Real database, real subprocesses, the tiny model."""

import os
import subprocess
import sys
import textwrap

import fiftyone as fo
import numpy as np
import pytest

import fiftyone_faseg as ff
from images import write_image
from fiftyone_faseg.analysis import iterate
from fiftyone_faseg.run.leases import FieldBusyError, FieldLease, LeaseLostError, _collection, current_holder, lease_key
from fiftyone_faseg.run.settings import RunRecord

KW = dict(classes=["cat", "dog"], threshold=0.3, batch_size=1)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def dataset(tmp_path):
    ds = fo.Dataset()
    ds.add_samples([fo.Sample(filepath=write_image(tmp_path / ("%d.png" % i), seed=i, w=56)) for i in range(4)])
    yield ds
    if fo.dataset_exists(ds.name):
        ds.delete()


def test_a_held_field_is_refused_naming_its_holder_and_nothing_is_written(dataset, tiny_faseg):
    with FieldLease(dataset, "faseg", "re-threshold"):
        with pytest.raises(FieldBusyError, match=r"being written by another FA-Seg re-threshold \(host .*process %d, "
                                                 r"since .* UTC.*wait until it finishes" % os.getpid()):
            ff.segment_samples(dataset, segmenter=tiny_faseg, **KW)
        assert "faseg" not in dataset.get_field_schema() and "faseg" not in dataset.mask_targets
    summary = ff.segment_samples(dataset, segmenter=tiny_faseg, **KW)  # released: the field is free again
    assert len(summary.processed) == 4 and current_holder(dataset, "faseg") is None


def test_an_expired_lease_is_taken_over_and_its_holder_stops_writing(dataset):
    stale = FieldLease(dataset, "faseg", "run", ttl_s=0.001)
    stale.acquire()
    stale._stop.set()  # a holder that stopped renewing (killed, suspended)
    taker = FieldLease(dataset, "faseg", "rerun", ttl_s=60)
    import time

    time.sleep(0.01)  # expired 1 ms after its last heartbeat, on the database's clock
    with taker:
        assert current_holder(dataset, "faseg")["operation"] == "rerun"
        with pytest.raises(LeaseLostError, match="taken over by rerun"):
            stale.renew()
        stale.release()  # never frees the new holder's lease
        assert current_holder(dataset, "faseg")["owner"] == taker.token
    assert _collection().find_one({"_id": lease_key(dataset, "faseg")}) is None


def test_lease_times_are_the_database_servers_clock_not_the_writers(dataset):
    # writers on machines whose clocks disagree must agree on expiry: every time is $$NOW
    with FieldLease(dataset, "faseg", "run", ttl_s=90) as lease:
        on_server_clock = {"_id": lease.key, "$expr": {"$and": [
            {"$lte": [{"$abs": {"$subtract": ["$$NOW", "$since"]}}, 60_000]},
            {"$eq": [{"$subtract": ["$expires", "$heartbeat"]}, 90_000]},
        ]}}
        assert _collection().count_documents(on_server_clock) == 1
        # expired on the server's clock (whatever this process's clock says): taken over
        _collection().update_one({"_id": lease.key}, [{"$set": {"expires": {"$add": ["$$NOW", -1]}}}])
        assert current_holder(dataset, "faseg") is None
        with FieldLease(dataset, "faseg", "rerun", ttl_s=60):
            with pytest.raises(LeaseLostError):
                lease.renew()
        lease.release()


def test_case04_rethreshold_in_place_while_a_run_writes_is_refused(dataset, tiny_faseg):
    ff.segment_samples(dataset, segmenter=tiny_faseg, store_scores=True, **KW)
    steps = ff.iter_segment_samples(dataset, segmenter=tiny_faseg, store_scores=True, overwrite=True,
                                    **dict(KW, threshold=0.9))
    next(steps)  # the run holds the field and has written part of it
    assert RunRecord.read(dataset, "faseg").in_progress
    with pytest.raises(FieldBusyError, match="being written by another FA-Seg run"):
        iterate.rethreshold(dataset, "faseg", 0.05)
    with pytest.raises(FieldBusyError):  # reading a field being written into a copy is refused too
        iterate.rethreshold(dataset, "faseg", 0.05, out_field="copy")
    for _ in steps:
        pass
    record = RunRecord.read(dataset, "faseg")
    assert record.threshold == 0.9 and not record.in_progress and not record.pending
    # every mask is the 0.9 one: re-thresholding at 0.9 gives each back exactly
    before = {s.id: s.faseg.get_mask().copy() for s in dataset}
    iterate.rethreshold(dataset, "faseg", 0.9, out_field="check")
    assert all(np.array_equal(dataset[i].check.get_mask(), m) for i, m in before.items())
    assert "copy" not in dataset.get_field_schema()


_RACER = """
    import os, sys, time
    import fiftyone as fo
    import fiftyone_faseg as ff
    from faseg_core import FASeg, FASegConfig
    from fiftyone_faseg.run.leases import FieldBusyError
    seg = FASeg.from_pretrained(sys.argv[1], config=FASegConfig().at_image_size(128), device="cpu")
    ds = fo.load_dataset(sys.argv[2])
    open(sys.argv[4] + ".ready", "w").close()
    while not os.path.exists(sys.argv[3]):  # both start together
        time.sleep(0.01)
    try:
        ff.segment_samples(ds, classes=sys.argv[5].split(","), segmenter=seg, threshold=0.3, batch_size=1)
    except (FieldBusyError, ValueError) as e:
        print("REFUSED %s: %s" % (type(e).__name__, e))
        sys.exit(3)
    print("WROTE")
"""


def test_case03_two_processes_racing_for_an_empty_field_one_writes_the_other_is_refused(dataset, tiny_sd_dir,
                                                                                       tmp_path):
    script = tmp_path / "racer.py"
    script.write_text(textwrap.dedent(_RACER))
    go = tmp_path / "go"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    names = {"a": "cat,dog", "b": "bird,cow"}
    procs = {k: subprocess.Popen([sys.executable, str(script), str(tiny_sd_dir), dataset.name, str(go),
                                  str(tmp_path / k), v], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=env) for k, v in names.items()}
    import time

    deadline = time.time() + 240
    while not all((tmp_path / (k + ".ready")).exists() for k in procs) and time.time() < deadline:
        if any(p.poll() is not None for p in procs.values()):  # a racer died before the start: see its error below
            break
        time.sleep(0.05)
    go.touch()
    results = {k: (p.wait(300), *p.communicate()) for k, p in procs.items()}
    codes = sorted(code for code, _, _ in results.values())
    assert codes == [0, 3], {k: (c, out, err[-2000:]) for k, (c, out, err) in results.items()}
    winner = next(k for k, (code, _, _) in results.items() if code == 0)
    loser_out = next(out for code, out, _ in results.values() if code == 3)
    assert "being written by another FA-Seg run" in loser_out or "already has labels" in loser_out, loser_out
    dataset.reload()
    assert sorted(dataset.mask_targets["faseg"].values()) == sorted(names[winner].split(","))
    for sample in dataset:  # every mask is the winner's, none replaced by the loser
        assert [c.label for c in sample.faseg_candidates.classifications] == names[winner].split(",")
    record = RunRecord.read(dataset, "faseg")
    assert not record.in_progress and record.class_list == names[winner].split(",")
    assert current_holder(dataset, "faseg") is None

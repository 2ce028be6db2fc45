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
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

logger = logging.getLogger(__name__)

RUN_URI = "@faseg/fiftyone-faseg/run_faseg"
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


def prepare_run(samples, params):
    """Fixes what concurrent workers would otherwise all write to the dataset document:
    the label field's ``mask_targets`` and the run's field schema.

    Each shard then finds both already in place and writes only its own samples, so
    two workers never race on the dataset document (the same pixel values as a single
    run would choose: :func:`fiftyone_faseg.classes.assign_ids`).

    Args:
        samples: the :class:`fiftyone.core.collections.SampleCollection` to be run
        params: the ``run_faseg`` parameters (``label_field``, ``classes``,
            ``classes_from``, ``gt_field``)
    """
    import fiftyone as fo
    import fiftyone.core.labels as fol

    from . import classes as fcl
    from . import run as frun
    from .fields import candidates_field

    dataset = samples._dataset
    label_field = params.get("label_field") or "faseg"
    classes = [c for c in (params.get("classes") or []) if c and str(c).strip()]
    gt_field = params.get("gt_field") or None
    classes_from = fcl.parse_classes_from(classes, params.get("classes_from") or "list", gt_field)
    names = fcl.run_class_names(samples, classes, classes_from, gt_field, classes_field=params.get("classes_field"),
                                label_field=label_field)
    fcl.fix_mask_targets(samples, label_field, names, gt_field)

    schema = dataset.get_field_schema()
    for name, doc_type in ((label_field, fol.Segmentation), (candidates_field(label_field), fol.Classifications)):
        if name not in schema:
            dataset.add_sample_field(name, fo.EmbeddedDocumentField, embedded_doc_type=doc_type)
    frun.declare_fields(dataset, label_field)


def pending_ids(samples, label_field, overwrite=False):
    """Ids of the samples a run still has to do: all with ``overwrite``, else those
    without ``label_field``."""
    if overwrite or label_field not in samples._dataset.get_field_schema():
        return samples.values("id")
    return samples.exists(label_field, False).values("id")


def queue_shards(samples, num_shards, params, operator_uri=RUN_URI, delegation_target=None):
    """Queues the pending part of a collection as ``num_shards`` delegated runs of
    ``run_faseg``, one disjoint slice each, for ``fiftyone delegated launch`` workers.

    Pending means without ``params["label_field"]``, unless ``params["overwrite"]``.
    Each run gets ``num_shards=1`` and ``skip_existing=True`` unless ``overwrite`` (so a requeued run
    finishes only what is left of its slice) and its slice as its view. The label
    field's ``mask_targets`` and schema are fixed first (:func:`prepare_run`).

    Example usage::

        from fiftyone_faseg.workers import queue_shards

        ids = queue_shards(dataset, 4, dict(classes=["cat", "dog"], output_dir="/data/masks"))
        # then, on each GPU: fiftyone delegated launch

    Args:
        samples: a :class:`fiftyone.core.collections.SampleCollection`
        num_shards: how many runs to queue (at most one per pending sample)
        params: the ``run_faseg`` parameters (see ``operators/run.py``)
        operator_uri (RUN_URI): the operator to queue
        delegation_target (None): an optional delegation target for the runs

    Returns:
        the list of queued run ids (strings), in slice order
    """
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionContext

    label_field = params.get("label_field") or "faseg"
    overwrite, skip_existing = bool(params.get("overwrite")), bool(params.get("skip_existing"))
    if not (overwrite or skip_existing) and label_field in samples._dataset.get_field_schema():
        count = samples.exists(label_field).count()
        if count:
            raise ValueError(
                "field '%s' already has labels on %d samples: pass overwrite=True to replace them "
                "or skip_existing=True to process only the others" % (label_field, count)
            )
    ids = pending_ids(samples, label_field, overwrite=overwrite)
    shards = shard_ids(ids, num_shards)
    if not shards:
        logger.info("nothing to queue: every sample of the view already has '%s'", label_field)
        return []
    prepare_run(samples, params)

    dataset = samples._dataset
    # a requeued slice finishes only what is left, unless the run replaces labels (then it is redone)
    child = dict(params, num_shards=1, skip_existing=not overwrite, overwrite=overwrite, view_target="CURRENT_VIEW")
    service = DelegatedOperationService()
    queued = []
    for i, shard in enumerate(shards):
        request_params = dict(
            dataset_name=dataset.name,
            view=dataset.select(shard)._serialize(),
            params=child,
            delegation_target=delegation_target,
        )
        op = service.queue_operation(
            operator=operator_uri,
            label="FA-Seg %s: shard %d/%d (%d samples)" % (label_field, i + 1, len(shards), len(shard)),
            delegation_target=delegation_target,
            context=ExecutionContext(request_params=request_params),
        )
        queued.append(str(op.id))
    logger.info("queued %d runs of %s over %d samples", len(queued), operator_uri, len(ids))
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


def find_stale_runs(max_age_s=DEFAULT_MAX_AGE_S, operator=RUN_URI, dataset_name=None, now=None):
    """RUNNING delegated runs whose heartbeat is older than ``max_age_s``.

    Args:
        max_age_s (DEFAULT_MAX_AGE_S): seconds without a heartbeat after which a run is
            presumed dead; more than the longest model load plus batch of a live worker
        operator (RUN_URI): only runs of this operator; None for every operator
        dataset_name (None): only runs on this dataset
        now (None): the current naive UTC time (for tests)

    Returns:
        a list of :class:`StaleRun`
    """
    from fiftyone.operators.delegated import DelegatedOperationService

    now = now or _utcnow()
    stale = []
    for op in DelegatedOperationService().get_running_operations(operator=operator, dataset_name=dataset_name):
        beat = heartbeat(op)
        age = (now - beat).total_seconds() if beat else float("inf")
        if age > max_age_s:
            rp = op.context.request_params if op.context is not None else {}
            stale.append(StaleRun(id=str(op.id), operator=op.operator, label=op.label or op.operator,
                                  dataset_name=rp.get("dataset_name"), heartbeat=str(beat), age_s=age))
    return stale


def recover_stale_runs(max_age_s=DEFAULT_MAX_AGE_S, requeue=True, operator=RUN_URI, dataset_name=None,
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
        operator (RUN_URI): only runs of this operator; None for every operator
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
        if doc.operator == RUN_URI:
            _remove_temp_files(params, max_age_s)
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


def _remove_temp_files(params, max_age_s):
    output_dir = params.get("output_dir")
    if isinstance(output_dir, dict):  # the folder picker's value
        output_dir = output_dir.get("absolute_path") or output_dir.get("path")
    if output_dir:
        remove_temp_files(os.path.join(output_dir, params.get("label_field") or "faseg"), max_age_s)


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
        p.add_argument("--all-operators", action="store_true", help="not only run_faseg")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    operator = None if args.all_operators else RUN_URI
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

"""Running FA-Seg over a collection on a Ray cluster: :func:`segment_samples_on_ray`.

The same run as :func:`fiftyone_faseg.segment_samples` (same settings, same checks
before the first write, same stored fields, each sample written whole by
:func:`fiftyone_faseg.run.outputs.write_outputs`), with the model calls spread over a pool
of Ray Data actors, one per GPU. How Ray is used is a :class:`RayOptions`.

1.  The driver (this process, the only one that talks to the database) plans the run
    (:func:`fiftyone_faseg.run.segment.begin_run`), then streams the rows to do (id, image path,
    caption, per-sample candidate classes) as columnar blocks into a Ray Data read: a
    feeder thread reads one block of rows at a time and hands it over through a queue,
    never more than ``blocks_in_flight`` blocks ahead of what has been written, so the
    first actor starts on the first block while the rest is still unread, and the
    driver's memory depends on the blocks in flight, not on the number of samples.
2.  ``map_batches`` gives each actor batches of exactly the model's ``batch_size`` rows;
    the actor loads the model once, reads the images, segments them and, with an
    ``output_dir``, writes the masks as PNG files under the run's root. Results come back
    as columns: file paths (or, without ``output_dir``, the masks themselves).
3.  The driver writes the samples as their blocks come back, each sample once (a retried
    block may return samples twice: the first result is kept).

A dead actor or node is Ray's to handle: the actor is restarted and its block retried
(``max_task_retries`` times). An unreadable image is a per-sample error, as in a local
run; a run-level error (a bad setting, a model that does not load where the actors run)
stops the run before anything is written.

Ray is an optional dependency: ``pip install "fiftyone-faseg[ray]"``.
"""

import argparse
import dataclasses
import functools
import io
import logging
import sys
import threading
import warnings
from dataclasses import dataclass

import numpy as np

from ..run.settings import RunSettings, add_flags, keyword_types, scalar_config_fields

logger = logging.getLogger(__name__)

MAX_BLOCK_ROWS = 256
"""Most rows per block (the unit of scheduling, of retry after a failure, and of the
driver's writes) when :attr:`RayOptions.block_rows` is not given."""

DEFAULT_MAX_TASK_RETRIES = 3


@dataclass(frozen=True)
class RayOptions:
    """How a run uses Ray; what the run does is its :class:`fiftyone_faseg.run.settings.RunSettings`.

    Attributes:
        address (None): the Ray cluster: ``"auto"`` (the cluster this machine belongs
            to), ``"host:6379"``, ``"ray://host:10001"``, or ``"local"`` (a new local
            Ray). The run connects for its own duration and disconnects after; a process
            already connected to Ray elsewhere is refused (see :func:`ray_connection`).
            None: the Ray this process is connected to, else a local Ray for this run
        concurrency (None): segmenter actors (default: one per GPU of the cluster; one
            when it has no GPUs)
        num_gpus (None): GPUs per actor (default: 1 when the cluster has GPUs, else 0;
            0.5 puts two actors on a GPU)
        block_rows (None): rows per block, a multiple of the model's batch size
            (default: enough blocks for every actor, at most 256 rows)
        blocks_in_flight (None): blocks read but not yet written, at most (default:
            ``2 * concurrency + 2``): what bounds the driver's memory
        max_task_retries (3): times a block is retried after its actor died: enough for
            lost nodes, and bounded so that an input that kills its process fails the
            run instead of looping
    """

    address: str = None
    concurrency: int = None
    num_gpus: float = None
    block_rows: int = None
    blocks_in_flight: int = None
    max_task_retries: int = DEFAULT_MAX_TASK_RETRIES

    def __post_init__(self):
        for name in ("concurrency", "block_rows", "blocks_in_flight"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
                raise ValueError("`%s` must be an integer >= 1 but is %r." % (name, value))
        if self.num_gpus is not None and not self.num_gpus >= 0:
            raise ValueError("`num_gpus` must be >= 0 but is %r." % (self.num_gpus,))
        if isinstance(self.max_task_retries, bool) or int(self.max_task_retries) != self.max_task_retries \
                or self.max_task_retries < 0:
            raise ValueError("`max_task_retries` must be an integer >= 0 but is %r." % (self.max_task_retries,))
        if self.address is not None and not (isinstance(self.address, str) and self.address.strip()):
            raise ValueError("`address` must be 'auto', 'local', host:port or ray://host:port, not %r"
                             % (self.address,))


def segment_samples_on_ray(samples, label_field=None, progress=None, settings=None, options=None, **kwargs):
    """Segments the images of a collection with FA-Seg on a Ray cluster.

    Takes the arguments of :func:`fiftyone_faseg.segment_samples` and stores the same
    fields, checked the same way before the first write. Every node needs this package
    (``pip install "fiftyone-faseg[ray]"``), the images at the paths the dataset stores,
    and ``output_dir`` on storage it shares with the driver. Only the driver talks to
    the database.

    Example usage::

        import fiftyone as fo
        from fiftyone_faseg.distributed.engine import RayOptions, segment_samples_on_ray

        dataset = fo.load_dataset("my-images")

        # one actor per GPU of the cluster; the actors write the masks
        segment_samples_on_ray(dataset, classes=["cat", "dog", "person"], output_dir="/shared/masks",
                               options=RayOptions(address="auto"))

        # after an interruption: only the samples that are not complete
        segment_samples_on_ray(dataset, classes=["cat", "dog", "person"], output_dir="/shared/masks",
                               options=RayOptions(address="auto"), skip_existing=True)

    Args:
        samples: a :class:`fiftyone.core.collections.SampleCollection`
        label_field ("faseg"): the field to store masks in
        progress (None): True for a progress bar, or ``callable(done, total)``
        settings (None): a :class:`fiftyone_faseg.run.settings.RunSettings`; keywords override it
        options (None): a :class:`RayOptions` (default: the connected Ray, else a local one)
        **kwargs: :class:`fiftyone_faseg.run.settings.RunSettings` fields, and ``config``,
            ``vocabulary``, ``segmenter``, ``proposer`` as for
            :func:`fiftyone_faseg.run.segment.iter_segment_samples` (a loaded segmenter or
            proposer is shipped to every actor instead of loading ``model_path`` there)

    Returns:
        a :class:`fiftyone_faseg.run.segment.RunSummary` whose ``processed`` and ``skipped`` are
        counts (:class:`Tally`): a Ray run keeps no list of every sample

    Raises:
        ValueError: a setting, field or class list that would lose or mislabel data, or
            a Ray connection this process cannot make, before anything is written
        ConnectionError: the Ray cluster cannot be reached, before anything is written
    """
    from ..run.segment import drive

    return drive(iter_segment_samples_on_ray(samples, label_field=label_field, settings=settings, options=options,
                                             **kwargs), progress)


def iter_segment_samples_on_ray(samples, label_field=None, settings=None, options=None, config=None,
                                vocabulary=None, segmenter=None, proposer=None, **kwargs):
    """:func:`segment_samples_on_ray` as a generator, like
    :func:`fiftyone_faseg.run.segment.iter_segment_samples`: yields ``(done, total, summary)``
    after each block of results is written (everything yielded so far is stored), so
    that callers report progress (operators) or stop early (which stops the actors).
    """
    from ..run.plan import prepare_run
    from ..run.segment import begin_run

    options = options or RayOptions()
    with ray_connection(options.address) as connect:
        # 1. Every check that needs no model (settings, fields, classes, existing labels)
        dataset = samples._dataset
        plan, summary = begin_run(samples, label_field, settings, config, vocabulary, segmenter, **kwargs)
        summary.processed, summary.skipped = Tally(), Tally(len(plan.skipped))
        plan.skipped = []
        total = len(plan.ids)
        if not total:
            summary.mask_targets = dict(dataset.mask_targets.get(plan.label_field) or {})
            yield 0, 0, summary
            return

        # 2. The model, where the actors will run it; then the run's first writes (its
        # classes' pixel values, its fields, its record)
        _check_block_rows(options, plan.config.batch_size)
        connect()
        num_gpus, concurrency = _resources(options)
        _check_model(plan, segmenter, num_gpus)
        prepare_run(dataset, plan)
        summary.mask_targets = dict(dataset.mask_targets.get(plan.label_field) or {})

        # 3. The rows through the actors, the results back into the dataset
        for done in _stream(dataset, plan, summary, options, segmenter, proposer, num_gpus, concurrency):
            yield done, total, summary


class Tally:
    """A count of sample ids that keeps none of them, in place of a
    :class:`fiftyone_faseg.run.segment.RunSummary` list: ``len()`` and ``append()`` work,
    iterating does not (query the dataset for the samples themselves)."""

    def __init__(self, count=0):
        self.count = int(count)

    def append(self, _):
        self.count += 1

    def __len__(self):
        return self.count

    def __iter__(self):
        raise TypeError("a Ray run counts its samples without keeping their ids: query the dataset "
                        "(e.g. dataset.exists(label_field)) for the samples themselves")

    def __repr__(self):
        return "Tally(%d)" % self.count


# ---------------------------------------------------------------------- connection

_CONNECTION_LOCK = threading.Lock()
_held = {"address": None, "runs": 0, "opened": False}  # the connection FA-Seg runs of this process hold


class ray_connection:
    """The Ray connection of one run, as a context manager whose value connects
    (``connect()``, idempotent) when the run gets that far.

    -   The process is not connected: ``connect()`` connects to ``address`` (None: a local
        Ray), and the connection is closed when the last run using it ends.
    -   Other FA-Seg runs of this process hold a connection: a run asking for the same
        address shares it; any other address is refused.
    -   The process was connected by its user (``ray.init``): ``address`` None or that
        cluster's address (``host:port``) uses it and leaves it open; any other address
        is refused (a later run never silently uses an earlier run's cluster).

    Raises:
        ValueError: on entering, when the process is connected elsewhere (names both addresses)
    """

    def __init__(self, address):
        self.address = address
        self.held = False  # whether this run holds a connection FA-Seg runs opened

    def __enter__(self):
        import ray

        with _CONNECTION_LOCK:
            if _held["runs"]:
                if self.address != _held["address"]:
                    raise ValueError(
                        "this process is connected to the Ray cluster at %s for another FA-Seg run, and this run "
                        "asks for %s: wait for that run to end, or run this one from another process"
                        % (_describe(_held["address"]), _describe(self.address)))
                _held["runs"] += 1
                self.held = True
            elif ray.is_initialized():
                current = ray.get_runtime_context().gcs_address
                if self.address not in (None, current):
                    raise ValueError(
                        "this process is already connected to the Ray cluster at %s, and this run asks for %s: "
                        "pass address=None to run on the connected cluster, or call ray.shutdown() first"
                        % (current, _describe(self.address)))
            else:
                _held.update(address=self.address, runs=1, opened=False)
                self.held = True
        return self.connect

    def connect(self):
        import ray

        if not self.held:
            return  # the user's own connection
        with _CONNECTION_LOCK:
            if _held["opened"]:
                return
            try:
                ray.init(address=self.address, include_dashboard=False if self.address in (None, "local") else None)
            except ConnectionError as e:
                raise ConnectionError("cannot reach the Ray cluster at %r (%s): start it (`ray start --head`, "
                                      "`ray up`), or pass address=None for a local Ray" % (self.address, e)) from e
            _held["opened"] = True

    def __exit__(self, *exc):
        import ray

        if not self.held:
            return
        with _CONNECTION_LOCK:
            _held["runs"] -= 1
            if not _held["runs"]:
                if _held["opened"]:
                    ray.shutdown()
                _held.update(address=None, opened=False)


def _describe(address):
    return "a local Ray (address None)" if address is None else repr(address)


# ---------------------------------------------------------------------- the stream


def _stream(dataset, plan, summary, options, segmenter, proposer, num_gpus, concurrency):
    """Feeds the plan's rows through the actor pool and writes the results as they come
    back; yields the number of samples written after each write."""
    import ray
    from ray.util.queue import Queue

    from ..run.outputs import write_outputs

    batch_size = plan.config.batch_size
    block_rows = _block_rows(options, batch_size, len(plan.ids), concurrency)
    num_blocks = -(-len(plan.ids) // block_rows)
    limit = options.blocks_in_flight or 2 * concurrency + 2
    shared = _shared_candidates(plan)
    queue = Queue(actor_options={"num_cpus": 0})
    feed = _Feed(dataset, plan, block_rows, num_blocks, limit, queue, shared)
    # one read task per block, each taking the next block the driver put in the queue (a
    # task's small blocks would otherwise wait in Ray Data's output buffer for the next
    # ones); at most `limit` waiting at a time
    rows = ray.data.read_datasource(_datasource_class()(queue, num_blocks), num_cpus=0,
                                    concurrency=min(limit, num_blocks),
                                    override_num_blocks=num_blocks)
    context = rows.context
    context.raise_original_map_exception = True  # a RunError (the model fails on a whole batch) as itself
    # an actor that dies while loading the model (lost node, OOM killer) is replaced a few
    # times; a model that cannot load at all was refused before any write
    context.max_consecutive_actor_init_deaths = 2 * concurrency + 1
    context.enable_progress_bars = False  # the run reports its own progress
    with warnings.catch_warnings():
        # Ray 2.60 takes an actor's retries only as extra keywords (deprecated, no named parameter yet)
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        results = rows.map_batches(
            SegmentBatch,
            fn_constructor_args=(dataclasses.replace(plan, ids=[], skipped=[]), segmenter, proposer),
            batch_size=batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=concurrency),
            num_gpus=num_gpus or None,
            max_restarts=-1,  # a dead actor is restarted (it reloads the model)
            max_task_retries=int(options.max_task_retries),
        )
    batches = iter(results.iter_batches(batch_size=None, batch_format="pyarrow"))
    done = 0
    feed.start()
    try:
        for table in batches:
            outputs = feed.take(_read_outputs(table, shared))
            if outputs:
                write_outputs(dataset, plan, outputs, summary)
                done += len(outputs)
                yield done
        feed.finish()
    finally:
        feed.stop()
        close = getattr(batches, "close", None)
        if close is not None:
            close()  # a driver that stops early stops the pipeline and frees its actors
        ray.kill(queue.actor)


class _Feed:
    """The driver's side of the stream: a thread that reads the plan's rows one block at a
    time (:func:`fiftyone_faseg.run.outputs.iter_rows`) and puts them in ``queue`` as
    columnar blocks, while at most ``limit`` blocks are read and not yet written; and
    the ids of those blocks, each removed when its result is taken."""

    def __init__(self, dataset, plan, block_rows, num_blocks, limit, queue, shared):
        self.dataset, self.plan, self.block_rows, self.limit = dataset, plan, block_rows, limit
        self.num_blocks = num_blocks
        self.queue, self.shared = queue, shared
        self.pending = {}  # block number -> ids of the block not yet written
        self.cond = threading.Condition()
        self.stopped = False
        self.error = None
        self.thread = threading.Thread(target=self._run, name="faseg-ray-feed", daemon=True)

    def start(self):
        self.thread.start()

    def _run(self):
        from ..run.outputs import iter_rows

        fed = 0
        try:
            for number, rows in enumerate(iter_rows(self.dataset, self.plan, self.block_rows)):
                with self.cond:
                    while len(self.pending) >= self.limit and not self.stopped:
                        self.cond.wait()
                    if self.stopped:
                        return
                    if rows:
                        self.pending[number] = {row["id"] for row in rows}
                self.queue.put(_rows_table(number, rows, self.shared is None) if rows else None)
                fed += 1
        except BaseException as e:  # raised by the driver's thread in finish()
            self.error = e
        for _ in range(self.num_blocks - fed):
            if self.stopped:
                return
            self.queue.put(None)  # the read tasks of blocks that will not come end empty

    def take(self, results):
        """The outputs of ``[(block number, SampleOutput)]`` not written yet (each sample's
        first result), marked written."""
        taken = []
        with self.cond:
            for number, out in results:
                ids = self.pending.get(number)
                if ids is None or out.id not in ids:
                    continue  # a retried block's second result
                ids.discard(out.id)
                if not ids:
                    del self.pending[number]
                    self.cond.notify()
                taken.append(out)
        return taken

    def finish(self):
        """After the last result: raises what stopped the reading, or names samples that
        never came back."""
        self.thread.join()
        if self.error is not None:
            raise self.error
        missing = sorted(i for ids in self.pending.values() for i in ids)
        if missing:
            raise RuntimeError("%d samples came back from Ray without a result (e.g. %s): rerun with "
                               "skip_existing=True to complete them" % (len(missing), missing[:3]))

    def stop(self):
        with self.cond:
            self.stopped = True
            self.cond.notify_all()
        self.thread.join(timeout=60)


def _check_block_rows(options, batch_size):
    if options.block_rows and options.block_rows % batch_size:
        raise ValueError("`block_rows` (%d) must be a multiple of the batch size (%d), so that every model call is "
                         "a full batch" % (options.block_rows, batch_size))


def _block_rows(options, batch_size, total, concurrency):
    """Rows per block: a multiple of the model's batch size, small enough that every actor
    gets blocks (4 each when the run is big enough), at most :data:`MAX_BLOCK_ROWS`."""
    if options.block_rows:
        return int(options.block_rows)
    per_actor = -(-total // (4 * concurrency))
    batches = max(1, min(MAX_BLOCK_ROWS // batch_size, -(-per_actor // batch_size)))
    return batches * batch_size


# ---------------------------------------------------------------------- the read


def _read_block(queue):
    """A read task: the next block put in ``queue`` (None: no block)."""
    block = queue.get()
    return [] if block is None else [block]


@functools.lru_cache(maxsize=None)
def _datasource_class():
    """The Datasource class, made on first use (Ray is an optional dependency)."""
    from ray.data import Datasource, ReadTask
    from ray.data.block import BlockMetadata

    class RowsDatasource(Datasource):
        """The run's rows as the driver feeds them: ``num_blocks`` read tasks on the
        driver's node, each taking one block from a queue."""

        def __init__(self, queue, num_blocks):
            super().__init__()
            self.queue, self.num_blocks = queue, num_blocks

        def estimate_inmemory_data_size(self):
            return None

        @property
        def supports_distributed_reads(self):
            return False  # next to the driver, which feeds it

        def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
            metadata = BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=None)
            return [ReadTask(functools.partial(_read_block, self.queue), metadata) for _ in range(self.num_blocks)]

    return RowsDatasource


# ---------------------------------------------------------------------- columns

_CANDIDATE_KEYS = ("name", "confidence", "source")


def _candidate_type():
    import pyarrow as pa

    return pa.list_(pa.struct([("name", pa.string()), ("confidence", pa.float64()), ("source", pa.string())]))


def _shared_candidates(plan):
    """The candidates every row of the run has (the classes named, or all of a ground
    truth's; None with the tagger, which proposes them per image), or None when each
    sample has its own (a classes field, the classes of each ground-truth mask): only
    those travel in the rows."""
    from ..run.outputs import _row_candidates

    if plan.per_sample_field or plan.classes_from == "gt_field":
        return None
    return _row_candidates(plan, {}, None)


def _rows_table(number, rows, per_sample):
    """One block of rows as columns: ``block`` (its number), the rows' fields, and
    ``candidates`` only when they differ per sample."""
    import pyarrow as pa

    columns = {"block": pa.array([number] * len(rows), pa.int64())}
    for key in rows[0]:
        if key != "candidates":
            columns[key] = pa.array([row[key] for row in rows])
    if per_sample:
        columns["candidates"] = pa.array([_candidate_dicts(row["candidates"]) for row in rows], _candidate_type())
    return pa.table(columns)


def _candidate_dicts(candidates):
    return None if candidates is None else [dict(zip(_CANDIDATE_KEYS, c)) for c in candidates]


def _candidate_tuples(dicts):
    return None if dicts is None else [tuple(d[k] for k in _CANDIDATE_KEYS) for d in dicts]


def _table_rows(table, shared):
    """The rows of a block or batch, as :func:`fiftyone_faseg.run.outputs.segment_rows` takes them."""
    rows = table.drop_columns(["block"]).to_pylist()
    for row in rows:
        row["candidates"] = _candidate_tuples(row["candidates"]) if "candidates" in row else shared
    return rows


def _array_fields():
    from ..run.outputs import SampleOutput

    return {f.name for f in dataclasses.fields(SampleOutput) if f.type in (np.ndarray, "np.ndarray")}


def _outputs_table(outputs, blocks, shared):
    """:class:`fiftyone_faseg.run.outputs.SampleOutput` as columns: arrays (masks that travel
    back) as ``.npy`` bytes, candidates equal to the run's shared ones left out."""
    import pyarrow as pa

    from ..run.outputs import SampleOutput

    arrays = _array_fields()
    columns = {"block": blocks}
    for f in dataclasses.fields(SampleOutput):
        values = [getattr(out, f.name) for out in outputs]
        if f.name == "candidates":
            columns[f.name] = pa.array([None if shared is not None and list(v) == shared else _candidate_dicts(v)
                                        for v in values], _candidate_type())
        elif f.name in arrays:
            columns[f.name] = pa.array([None if v is None else _npy(v) for v in values], pa.binary())
        else:
            columns[f.name] = pa.array(values)
    return pa.table(columns)


def _read_outputs(table, shared):
    """``[(block number, SampleOutput)]`` of a table of :func:`_outputs_table`."""
    from ..run.outputs import SampleOutput

    arrays = _array_fields()
    columns = table.to_pydict()
    blocks = columns.pop("block")
    names = [f.name for f in dataclasses.fields(SampleOutput) if f.name in columns]
    results = []
    for i, number in enumerate(blocks):
        values = {name: columns[name][i] for name in names}
        for name in arrays:
            if values.get(name) is not None:
                values[name] = np.load(io.BytesIO(values[name]), allow_pickle=False)
        values["candidates"] = shared if values["candidates"] is None else _candidate_tuples(values["candidates"])
        results.append((number, SampleOutput(**values)))
    return results


def _npy(array):
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


# ---------------------------------------------------------------------- the actors


class SegmentBatch:
    """The callable class of ``map_batches``: one instance per actor, which loads the
    model once and turns each batch of rows (``batch_size`` of them, one model call)
    into a batch of results (mask files written under the run's root with an
    ``output_dir``).

    Args:
        plan: the run's :class:`fiftyone_faseg.run.plan.RunPlan` (after ``prepare_run``)
        segmenter (None): a loaded :class:`faseg_core.FASeg` (else ``model_path`` is loaded)
        proposer (None): a loaded ``(Captioner, Tagger)`` (else loaded when the run needs one)
    """

    def __init__(self, plan, segmenter=None, proposer=None):
        from ..run.models import load_proposer

        model = plan.settings.model
        self.plan = plan
        self.shared = _shared_candidates(plan)
        self.segmenter = segmenter or _load_segmenter(plan)
        if plan.captioning and proposer is None:
            proposer = load_proposer(model.captioner_path, model.tagger_model, device=model.device)
        self.proposer = proposer

    def __call__(self, batch):
        from ..run.outputs import segment_rows

        outputs = segment_rows(_table_rows(batch, self.shared), self.plan, self.segmenter, self.proposer)
        return _outputs_table(outputs, batch.column("block"), self.shared)


def _resources(options):
    """``(GPUs per actor, number of actors)``: one actor per GPU of the cluster by default."""
    import ray

    gpus = ray.cluster_resources().get("GPU", 0)
    num_gpus = options.num_gpus
    if num_gpus is None:
        num_gpus = 1 if gpus else 0
    if num_gpus > gpus:
        raise ValueError("`num_gpus` is %r per actor and the Ray cluster has %g GPUs: pass num_gpus=0 to run on "
                         "CPUs, or add GPU nodes" % (num_gpus, gpus))
    concurrency = options.concurrency
    if concurrency is None:
        concurrency = max(1, int(gpus // num_gpus)) if num_gpus else 1
    return num_gpus, int(concurrency)


def _check_model(plan, segmenter, num_gpus):
    """The model loads and segments an image where the actors will run it, and every
    class name fits its prompt: checked before the run's first write."""
    import ray

    if segmenter is not None:
        _try_model(plan, segmenter)
        return
    check = ray.remote(num_gpus=num_gpus or 0, max_retries=1)(_try_model)
    try:
        ray.get(check.remote(dataclasses.replace(plan, ids=[], skipped=[])))
    except ray.exceptions.RayTaskError as e:
        raise ValueError("`model_path` %r does not load (or run) on the Ray workers, so nothing was written: %s"
                         % (plan.settings.model.model_path, e.cause if e.cause is not None else e)) from e


def _try_model(plan, segmenter=None):
    from PIL import Image

    from ..run.plan import check_model

    segmenter = segmenter or _load_segmenter(plan)
    check_model(plan, segmenter)
    segmenter(Image.new("RGB", (64, 64)), list(plan.names[:1]), config=plan.config)


def _load_segmenter(plan):
    from ..run.models import load_segmenter

    model = plan.settings.model
    return load_segmenter(model.model_path, device=model.device, dtype=model.dtype)


# ---------------------------------------------------------------------- command line


def _parser():
    parser = argparse.ArgumentParser(
        prog="faseg-ray",
        description="Segment a FiftyOne dataset with FA-Seg on a Ray cluster (see docs/scaling.md).",
    )
    parser.add_argument("dataset", help="name of the FiftyOne dataset")
    parser.add_argument("--view", help="a saved view of the dataset to segment instead of all of it")
    parser.add_argument("--address", help="'auto', host:6379, ray://host:10001, 'local', or none for a local Ray")
    parser.add_argument("--concurrency", type=int, help="segmenter actors (default: one per GPU)")
    parser.add_argument("--num-gpus", type=float, help="GPUs per actor (default: 1 with GPUs, else 0)")
    parser.add_argument("--block-rows", type=int, help="rows per Ray block (default: from the run, at most %d)"
                        % MAX_BLOCK_ROWS)
    # the run's flat keywords (RunSettings.from_kwargs), and one flag per scalar FASegConfig field
    settings = parser.add_argument_group("run settings (fiftyone_faseg.run.settings.RunSettings)")
    own = keyword_types()
    settings.add_argument("--tagger-model", nargs=2, metavar=("MODEL", "PRETRAINED"), help="open_clip tagger")
    add_flags(settings, {k: t for k, t in own.items() if k != "tagger_model"}, help={"classes": "class names"})
    add_flags(settings, scalar_config_fields(skip=own))
    return parser


def main(argv=None):
    """``faseg-ray DATASET --classes cat dog --address auto --output-dir /shared/masks``"""
    args = vars(_parser().parse_args(argv))
    import fiftyone as fo

    dataset = fo.load_dataset(args["dataset"])
    samples = dataset.load_saved_view(args["view"]) if args["view"] else dataset
    kwargs = {k: v for k, v in args.items() if k in RunSettings.fields() and v is not None}
    options = RayOptions(address=args["address"], concurrency=args["concurrency"], num_gpus=args["num_gpus"],
                         block_rows=args["block_rows"])
    summary = segment_samples_on_ray(samples, options=options, progress=True, **kwargs)
    print(summary)
    for reason, count in summary.reasons():
        print("  %d x %s" % (count, reason))
    return 0


if __name__ == "__main__":
    sys.exit(main())

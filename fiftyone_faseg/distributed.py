"""Running FA-Seg over a collection on a Ray cluster: :func:`segment_samples_on_ray`.

The same run as :func:`fiftyone_faseg.segment_samples` (same settings, same stored
fields, same checks before the first write), with the model calls spread over a pool of
Ray actors, one per GPU:

1.  the driver (this process) plans the run (:func:`fiftyone_faseg.plan.plan_run`), reads
    the view's rows (id, filepath, per-sample classes and caption) in one streaming pass
    and hands them to Ray Data in chunks (one block each, kept in Ray's object store);
2.  ``map_batches`` sends batches of rows to a pool of segmenter actors, each of which
    loads the model once, reads the images, segments them and writes the mask files
    under ``output_dir`` (shared storage; without it the masks travel back);
3.  the driver writes the results back to FiftyOne as they arrive, in bulk, each sample
    whole (:func:`fiftyone_faseg.outputs.write_outputs`, as a local run does).

A dead actor or node is Ray's to handle: the actor is restarted and its block retried
(Ray Data's actor fault tolerance), and the driver writes each sample once, whichever
attempt returned it. An unreadable image is a per-sample error, as in a local run; a
run-level error (a bad setting, a model that does not load where the actors run) stops
the run before anything is written.

Ray is an optional dependency: ``pip install "fiftyone-faseg[ray]"``.
"""

import argparse
import dataclasses
import inspect
import logging
import pickle
import sys
import warnings

from .settings import RunSettings

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 256
"""Rows per Ray block: the unit of scheduling, of retry after a failure, and of the
driver's writes (outputs come back a block at a time)."""

DEFAULT_MAX_TASK_RETRIES = 3
"""Times a block is retried after its actor died (Ray's ``max_task_retries``): enough for
lost nodes, and bounded so that an input that crashes the process fails the run instead of
looping."""


def segment_samples_on_ray(
    samples,
    label_field=None,
    address=None,
    concurrency=None,
    num_gpus=None,
    batch_size=None,
    progress=None,
    settings=None,
    chunk_size=None,
    max_task_retries=DEFAULT_MAX_TASK_RETRIES,
    config=None,
    vocabulary=None,
    segmenter=None,
    proposer=None,
    **kwargs,
):
    """Segments the images of a collection with FA-Seg on a Ray cluster.

    Takes the keywords of :func:`fiftyone_faseg.segment_samples` (the fields of
    :class:`fiftyone_faseg.settings.RunSettings`) and stores the same fields, checked the
    same way before the first write. Every node needs this package
    (``pip install "fiftyone-faseg[ray]"``), the images at the paths the dataset stores,
    and ``output_dir`` on storage it shares with the driver. Only the driver talks to
    the database.

    Example usage::

        import fiftyone as fo
        from fiftyone_faseg.distributed import segment_samples_on_ray

        dataset = fo.load_dataset("my-images")

        # one actor per GPU of the cluster; the workers write the masks
        segment_samples_on_ray(
            dataset,
            classes=["cat", "dog", "person"],
            output_dir="/shared/masks",
            address="auto",
        )

        # after an interruption: only the samples that are not complete
        segment_samples_on_ray(dataset, classes=["cat", "dog", "person"],
                               output_dir="/shared/masks", address="auto", skip_existing=True)

    Args:
        samples: a :class:`fiftyone.core.collections.SampleCollection`
        label_field ("faseg"): the field to store masks in
        address (None): the Ray cluster: ``"auto"`` (the cluster this machine belongs
            to), a ``ray://host:10001`` URL, or None for the Ray this process is
            connected to, else a local Ray started (and stopped) for this run
        concurrency (None): number of segmenter actors (default: one per GPU of the
            cluster; one when it has no GPUs)
        num_gpus (None): GPUs per actor (default: 1 when the cluster has GPUs, else 0)
        batch_size (None): images per model call
        progress (None): True for a progress bar, or ``callable(done, total)``
        settings (None): a :class:`fiftyone_faseg.settings.RunSettings`; keywords
            override it
        chunk_size (256): rows per Ray block, the unit of scheduling, of retry after a
            failure and of the driver's writes
        max_task_retries (3): times a block is retried after its actor died
        config (None): the :class:`faseg_core.FASegConfig` to start from (paper defaults)
        vocabulary (None): a :class:`faseg_core.candidates.Vocabulary` for the tagger
        segmenter (None): a loaded :class:`faseg_core.FASeg` shipped to every actor
            instead of loading ``model_path`` there (small models, tests)
        proposer (None): a loaded ``(Captioner, Tagger)`` shipped to every actor
        **kwargs: other :class:`fiftyone_faseg.settings.RunSettings` fields
            (``classes``, ``output_dir``, ``skip_existing``, ...)

    Returns:
        a :class:`fiftyone_faseg.run.RunSummary`

    Raises:
        ValueError: a setting, field or class list that would lose or mislabel data,
            before anything is written
        ConnectionError: the Ray cluster cannot be reached, before anything is written
    """
    from .run import drive

    steps = iter_segment_samples_on_ray(
        samples, label_field=label_field, address=address, concurrency=concurrency, num_gpus=num_gpus,
        batch_size=batch_size, settings=settings, chunk_size=chunk_size, max_task_retries=max_task_retries,
        config=config, vocabulary=vocabulary, segmenter=segmenter, proposer=proposer, **kwargs,
    )
    return drive(steps, progress)


def iter_segment_samples_on_ray(
    samples,
    label_field=None,
    address=None,
    concurrency=None,
    num_gpus=None,
    batch_size=None,
    settings=None,
    chunk_size=None,
    max_task_retries=DEFAULT_MAX_TASK_RETRIES,
    config=None,
    vocabulary=None,
    segmenter=None,
    proposer=None,
    **kwargs,
):
    """:func:`segment_samples_on_ray` as a generator, like
    :func:`fiftyone_faseg.run.iter_segment_samples`: yields ``(done, total, summary)``
    after each block of results is written (everything yielded so far is stored), so
    that callers report progress (operators) or stop early (which stops the actors).

    Args:
        see :func:`segment_samples_on_ray`

    Yields:
        ``(done, total, summary)``: samples written, samples to do, a
        :class:`fiftyone_faseg.run.RunSummary`
    """
    import ray

    from .plan import prepare_run
    from .run import begin_run

    if batch_size is not None:
        kwargs["batch_size"] = batch_size
    chunk_size = int(chunk_size or DEFAULT_CHUNK_SIZE)
    if chunk_size < 1:
        raise ValueError("`chunk_size` must be >= 1 but is %r." % chunk_size)

    # 1. Every check that needs no model (settings, fields, classes, existing labels)
    dataset = samples._dataset
    plan, summary = begin_run(samples, label_field, settings, config, vocabulary, segmenter, **kwargs)
    settings = plan.settings
    total = len(plan.ids)
    if not total:
        summary.mask_targets = dict(dataset.mask_targets.get(settings.label_field) or {})
        yield 0, 0, summary
        return

    started = _connect(address)
    try:
        # 2. The model, where the actors will run it; then the run's first writes (its
        # classes' pixel values, its fields, its record)
        num_gpus, concurrency = _resources(num_gpus, concurrency)
        _check_model(plan, segmenter, num_gpus)
        prepare_run(dataset, plan)
        summary.mask_targets = dict(dataset.mask_targets.get(settings.label_field) or {})

        # 3. The rows through the actors, the results back into the dataset; the actors
        # get the plan without its id lists (the driver keeps those)
        shipped = dataclasses.replace(plan, ids=[], skipped=[])
        pipeline = _pipeline(shipped, segmenter, proposer, concurrency, num_gpus, max_task_retries)
        for done in _run(dataset, plan, summary, pipeline, chunk_size):
            yield done, total, summary
    finally:
        if started:
            ray.shutdown()


def _run(dataset, plan, summary, pipeline, chunk_size):
    """Streams the plan's rows through ``pipeline`` and writes each sample once, as it
    comes back (a retried block may return samples twice: the first result is kept).
    Yields the number of samples written after each write."""
    import ray

    from .outputs import iter_rows, write_outputs

    # rows read once, in order, and handed to Ray a chunk (one block) at a time
    refs = [ray.put(_rows_block(rows)) for rows in iter_rows(dataset, plan, chunk_size)]
    expected, done = set(plan.ids), set()
    batches = iter(pipeline(ray.data.from_arrow_refs(refs)).iter_batches(batch_size=None, batch_format="pyarrow"))
    try:
        for block in batches:
            outputs = {}
            for sample_id, output in zip(block.column("id").to_pylist(), block.column("output").to_pylist()):
                if sample_id in expected and sample_id not in done:
                    outputs[sample_id] = output
            if outputs:
                write_outputs(dataset, plan, [pickle.loads(o) for o in outputs.values()], summary)
                done.update(outputs)
                yield len(done)
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()  # a driver that stops early stops the pipeline and frees its actors
    missing = expected - done
    if missing:
        raise RuntimeError("%d samples came back from Ray without a result (e.g. %s): rerun with skip_existing=True "
                           "to complete them" % (len(missing), sorted(missing)[:3]))


class SegmentRows:
    """The callable class of ``map_batches``: one instance per actor, which loads the
    model once and turns batches of rows into :class:`fiftyone_faseg.outputs.SampleOutput`
    (files written under the run's root).

    Args:
        plan: the run's :class:`fiftyone_faseg.plan.RunPlan` (after ``prepare_run``)
        segmenter (None): a loaded :class:`faseg_core.FASeg` (else ``model_path`` is loaded)
        proposer (None): a loaded ``(Captioner, Tagger)`` (else loaded when the run needs one)
    """

    def __init__(self, plan, segmenter=None, proposer=None):
        from .models import load_proposer

        settings = plan.settings
        self.plan = plan
        self.segmenter = segmenter or _load_segmenter(plan)
        if plan.captioning and proposer is None:
            proposer = load_proposer(settings.captioner_path, settings.tagger_model, device=settings.device)
        self.proposer = proposer

    def __call__(self, batch):
        import pyarrow as pa

        from .outputs import segment_rows

        ids, outputs = [], []
        step = self.plan.config.batch_size
        for chunk in batch.column("rows").to_pylist():
            rows = pickle.loads(chunk)
            for start in range(0, len(rows), step):
                for out in segment_rows(rows[start : start + step], self.plan, self.segmenter, self.proposer):
                    ids.append(out.id)
                    outputs.append(pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL))
        return pa.table({"id": pa.array(ids, pa.string()), "output": pa.array(outputs, pa.binary())})


def _pipeline(plan, segmenter, proposer, concurrency, num_gpus, max_task_retries):
    """``rows dataset -> results dataset``: a fixed pool of ``concurrency`` segmenter actors."""
    import ray

    def pipeline(rows):
        context = rows.context
        # a UDF error (RunError: the model fails on a whole batch) is raised as itself
        context.raise_original_map_exception = True
        # an actor that dies while loading the model (lost node, OOM killer) is replaced
        # a few times; a model that cannot load at all was refused before any write
        context.max_consecutive_actor_init_deaths = 2 * concurrency + 1
        with warnings.catch_warnings():
            # Ray 2.60 takes the actor options as extra keywords, with a deprecation warning
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
            return rows.map_batches(
                SegmentRows,
                fn_constructor_args=(plan, segmenter, proposer),
                batch_size=1,  # one chunk of rows per call, segmented a batch of images at a time
                batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(size=concurrency),
                num_gpus=num_gpus or None,
                **_fault_tolerance(max_task_retries),
            )

    return pipeline


def _fault_tolerance(max_task_retries):
    """A dead actor is restarted without limit (the restart reloads the model); the block
    it was on is retried up to ``max_task_retries`` times, so that an input which kills
    the process fails the run instead of looping (Ray Data's default: no limit)."""
    import ray

    args = {"max_restarts": -1, "max_task_retries": int(max_task_retries)}
    params = inspect.signature(ray.data.Dataset.map_batches).parameters
    if all(k in params for k in args) or any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return args
    logger.warning("this Ray's map_batches takes no max_task_retries: a failed block is retried without limit")
    return {}


def _connect(address):
    """Connects to Ray; True when this call started a local Ray (to stop after the run)."""
    import ray

    if ray.is_initialized():
        if address not in (None, "auto"):
            logger.info("already connected to Ray: using that cluster, not %s", address)
        return False
    try:
        ray.init(address=address, include_dashboard=False if address is None else None)
    except ConnectionError as e:
        raise ConnectionError("cannot reach the Ray cluster at %r (%s): start it (`ray start --head`, `ray up`), "
                              "or pass address=None for a local Ray" % (address, e)) from e
    return address is None


def _resources(num_gpus, concurrency):
    """``(GPUs per actor, number of actors)``: one actor per GPU of the cluster by default."""
    import ray

    gpus = ray.cluster_resources().get("GPU", 0)
    if num_gpus is None:
        num_gpus = 1 if gpus else 0
    if num_gpus < 0:
        raise ValueError("`num_gpus` must be >= 0 but is %r." % num_gpus)
    if num_gpus > gpus:
        raise ValueError("`num_gpus` is %r per actor and the Ray cluster has %g GPUs: pass num_gpus=0 to run on "
                         "CPUs, or add GPU nodes" % (num_gpus, gpus))
    if concurrency is None:
        concurrency = max(1, int(gpus // num_gpus)) if num_gpus else 1
    if isinstance(concurrency, bool) or int(concurrency) != concurrency or concurrency < 1:
        raise ValueError("`concurrency` must be an integer >= 1 but is %r." % (concurrency,))
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
                         % (plan.settings.model_path, e.cause if e.cause is not None else e)) from e


def _try_model(plan, segmenter=None):
    from PIL import Image

    from .plan import check_model

    segmenter = segmenter or _load_segmenter(plan)
    check_model(plan, segmenter)
    segmenter(Image.new("RGB", (64, 64)), list(plan.names[:1]), config=plan.config)


def _load_segmenter(plan):
    from .models import load_segmenter

    settings = plan.settings
    return load_segmenter(settings.model_path, device=settings.device, dtype=settings.dtype)


def _rows_block(rows):
    """One Ray block holding one chunk of rows, pickled at once. Rows are plain dicts of
    any shape (Arrow infers nothing), and equal candidate lists (a run's fixed classes)
    become one object, which pickle stores once: ~100 bytes per row even with 171
    classes, instead of ~4 KB."""
    import pyarrow as pa

    shared = {}
    packed = []
    for row in rows:
        cands = row.get("candidates")
        if cands is not None:
            row = dict(row, candidates=shared.setdefault(repr(cands), cands))
        packed.append(row)
    return pa.table({"rows": pa.array([pickle.dumps(packed, protocol=pickle.HIGHEST_PROTOCOL)], pa.binary())})


# ---------------------------------------------------------------------- command line


def _parser():
    parser = argparse.ArgumentParser(
        prog="faseg-ray",
        description="Segment a FiftyOne dataset with FA-Seg on a Ray cluster (see docs/scaling.md).",
    )
    parser.add_argument("dataset", help="name of the FiftyOne dataset")
    parser.add_argument("--view", help="a saved view of the dataset to segment instead of all of it")
    parser.add_argument("--address", help="'auto', ray://host:10001, or none for a local Ray")
    parser.add_argument("--concurrency", type=int, help="segmenter actors (default: one per GPU)")
    parser.add_argument("--num-gpus", type=float, help="GPUs per actor (default: 1 with GPUs, else 0)")
    parser.add_argument("--chunk-size", type=int, help="rows per Ray block (default %d)" % DEFAULT_CHUNK_SIZE)
    settings = parser.add_argument_group("run settings (fiftyone_faseg.settings.RunSettings)")
    for f in dataclasses.fields(RunSettings):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "classes":
            settings.add_argument(flag, nargs="+", help="class names")
        elif f.name == "tagger_model":
            settings.add_argument(flag, nargs=2, metavar=("MODEL", "PRETRAINED"), help="open_clip tagger")
        elif f.type in (bool, "bool") and f.default is None:
            settings.add_argument(flag, action=argparse.BooleanOptionalAction)
        elif f.type in (bool, "bool"):
            settings.add_argument(flag, action="store_true")
        else:
            kind = {"int": int, "float": float}.get(getattr(f.type, "__name__", f.type), str)
            settings.add_argument(flag, type=kind)
    return parser


def main(argv=None):
    """``faseg-ray DATASET --classes cat dog --address auto --output-dir /shared/masks``"""
    args = vars(_parser().parse_args(argv))
    import fiftyone as fo

    dataset = fo.load_dataset(args["dataset"])
    samples = dataset.load_saved_view(args["view"]) if args["view"] else dataset
    kwargs = {k: v for k, v in args.items() if k in RunSettings.fields() and v not in (None, False)}
    summary = segment_samples_on_ray(samples, address=args["address"], concurrency=args["concurrency"],
                                     num_gpus=args["num_gpus"], chunk_size=args["chunk_size"], progress=True,
                                     **kwargs)
    print(summary)
    for reason, count in summary.reasons():
        print("  %d x %s" % (count, reason))
    return 0


if __name__ == "__main__":
    sys.exit(main())

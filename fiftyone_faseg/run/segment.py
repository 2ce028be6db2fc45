"""Running FA-Seg over a FiftyOne collection: :func:`segment_samples`.

A run is checked whole before its first write (:func:`fiftyone_faseg.run.plan.plan_run`),
then streams its samples once: while the model segments one batch, the next batch's
images are read and the last batch's files and database update are written (one update
per sample, every field at once), so the model waits for neither. Each batch is
written as soon as it is done, so an interrupted run keeps everything it finished and
``skip_existing=True`` picks up the rest (completing samples whose files are missing).
"""

import logging
import re
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import fiftyone as fo

from .models import load_proposer, load_segmenter
from .outputs import finish_outputs, iter_rows, load_rows, segment_loaded, write_outputs
from .leases import FieldLease
from .checks import check_collection, check_field_name
from .plan import check_model, plan_run, prepare_run
from .settings import RunSettings

logger = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """What a run did: sample ids processed, skipped (already complete) and failed (with
    reasons), the field's ``mask_targets`` and the folder its files went to."""

    label_field: str
    processed: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    failed: dict = field(default_factory=dict)
    mask_targets: dict = field(default_factory=dict)
    root: str = None

    def reasons(self, limit=3):
        """The first ``limit`` distinct failure reasons, each with how many samples it hit:
        ``[(first such reason, count)]``. Reasons that differ only in what they quote (an
        image path, a sample id) are one reason."""
        groups = {}
        for reason in self.failed.values():
            key = re.sub(r"'[^']*'|\b[0-9a-f]{24}\b", "…", reason)
            first, count = groups.get(key, (reason, 0))
            groups[key] = (first, count + 1)
        return list(groups.values())[:limit]

    def __str__(self):
        return "%s: %d processed, %d skipped, %d failed" % (
            self.label_field, len(self.processed), len(self.skipped), len(self.failed)
        )


def begin_run(samples, label_field=None, settings=None, config=None, vocabulary=None, segmenter=None,
              operation="run", **kwargs):
    """The checked :class:`fiftyone_faseg.run.plan.RunPlan` of a run called with these
    arguments (here or on Ray) and its empty :class:`RunSummary`.

    The field's lease (:class:`fiftyone_faseg.run.leases.FieldLease`) is taken first, before
    the field's labels are judged, and held by the plan (``plan.lease``) until its last
    sample is written (then the final record is written and the lease given back, see
    :func:`fiftyone_faseg.run.outputs.write_outputs`), or until it is released by the
    caller (``with plan.lease:``) when the run stops early; a plan with nothing to do
    gives it back at once. Writes nothing else.

    Keywords override ``settings``; a loaded ``segmenter`` brings its config and records
    its checkpoint; ``operation`` names the run for a writer it refuses."""
    if settings is None:
        settings = RunSettings.from_kwargs(label_field=label_field or "faseg", **kwargs)
    else:
        changes = dict(kwargs, **({"label_field": label_field} if label_field else {}))
        settings = settings.replace(**changes) if changes else settings
    if segmenter is not None:
        config = config or segmenter.config
        settings = settings.replace(model_path=_model_path(segmenter, settings.model.model_path))
    label_field = settings.output.label_field
    check_collection(samples)
    check_field_name(label_field)
    lease = FieldLease(samples._dataset, label_field, operation).acquire()
    try:
        plan = plan_run(samples, settings, config=config, vocabulary=vocabulary)
    except BaseException:
        lease.release()
        raise
    plan.lease = lease
    weakref.finalize(plan, lease.release)  # a caller that drops the plan (e.g. a Ray run that failed) frees the field
    if not plan.ids:
        lease.release()
    return plan, RunSummary(label_field, skipped=list(plan.skipped), root=plan.root)


def segment_samples(samples, label_field=None, progress=None, settings=None, **kwargs):
    """Segments the images of a collection with FA-Seg.

    Example usage::

        import fiftyone_faseg as ff

        ff.segment_samples(dataset, label_field="faseg", classes=["cat", "dog", "sofa"])
        dataset.mask_targets["faseg"]  # {1: "cat", 2: "dog", 3: "sofa"}

    Args:
        samples: a :class:`fiftyone.core.collections.SampleCollection`
        label_field ("faseg"): the field to store masks in
        progress (None): True for a progress bar, or ``callable(done, total)``
        settings (None): a :class:`fiftyone_faseg.run.settings.RunSettings`; keywords override it
        **kwargs: flat keywords of :meth:`fiftyone_faseg.run.settings.RunSettings.from_kwargs`, and ``config``,
            ``vocabulary``, ``segmenter``, ``proposer`` (see :func:`iter_segment_samples`)

    Returns:
        a :class:`RunSummary`
    """
    return drive(iter_segment_samples(samples, label_field=label_field, settings=settings, **kwargs), progress)


def drive(steps, progress=None):
    """Runs a run's ``(done, total, summary)`` steps to the end, reporting progress (True: a
    progress bar; or ``callable(done, total)``); returns the last summary."""
    summary, bar = None, None
    try:
        for done, total, summary in steps:
            if progress is True:
                bar = bar or fo.ProgressBar(total=total)
                bar.set_iteration(done)
            elif callable(progress):
                progress(done, total)
    finally:
        close = getattr(steps, "close", None)
        if close is not None:
            close()  # a run stopped by its caller ends now: its field's lease is given back
        if bar is not None:
            bar.close()
    return summary


def iter_segment_samples(samples, label_field=None, settings=None, config=None, vocabulary=None, segmenter=None,
                         proposer=None, **kwargs):
    """Segments the images of a collection with FA-Seg, one batch at a time.

    A generator: after each batch is written it yields ``(done, total, summary)``, so
    callers can report progress (operators) or stop early; everything yielded so far is
    stored.

    Stored on each processed sample (one database update per sample):

    -   ``<label_field>``: an :class:`fiftyone.core.labels.Segmentation` (its mask on
        disk under ``output_dir`` when given), 0 = background
    -   ``<label_field>_candidates``: :class:`fiftyone.core.labels.Classifications` of the
        candidate classes, each with its ``confidence`` and ``source``
    -   ``<label_field>_caption``: the caption used in the prompt, or None
    -   ``<label_field>_error``: None, or why the sample has no mask
    -   ``<label_field>_scores``: path of the stored score maps, with ``store_scores``
    -   ``<label_field>_heatmap``: an :class:`fiftyone.core.labels.Heatmap` of the top
        class's score (uint8, 0-255 for scores 0-1, 128 px), with ``heatmap``

    Files go under ``<output_dir or FiftyOne's dataset folder/faseg>/<dataset id>/``
    (:func:`fiftyone_faseg.run.plan.files_root`). ``dataset.mask_targets[label_field]``
    gives each class name one pixel value for the whole dataset (claimed atomically:
    values seen in earlier runs are kept; a class takes the ground truth's value when
    free). The run's settings are recorded in the field's ``info["faseg"]``
    (:class:`fiftyone_faseg.run.settings.RunRecord`).

    Args:
        samples: a :class:`fiftyone.core.collections.SampleCollection`
        label_field ("faseg"): the field to store masks in
        settings (None): a :class:`fiftyone_faseg.run.settings.RunSettings`; keywords override it
        config (None): the :class:`faseg_core.FASegConfig` to start from (paper defaults)
        vocabulary (None): a :class:`faseg_core.candidates.Vocabulary` for the tagger
        segmenter (None): a loaded :class:`faseg_core.FASeg` to use instead of loading
        proposer (None): a loaded ``(Captioner, Tagger)`` for the tagger or captioner
        **kwargs: flat keywords of :meth:`fiftyone_faseg.run.settings.RunSettings.from_kwargs`

    Yields:
        ``(done, total, summary)``: samples done, samples to do, a :class:`RunSummary`

    Raises:
        ValueError: a setting, field or class list that would lose or mislabel data,
            before anything is written
        fiftyone_faseg.run.outputs.RunError: the model fails on every image of a batch
    """
    plan, summary = begin_run(samples, label_field, settings, config, vocabulary, segmenter, **kwargs)
    with plan.lease:  # given back however the run ends (finished, failed or stopped early)
        yield from _segment(samples._dataset, plan, summary, segmenter, proposer)


def _segment(dataset, plan, summary, segmenter, proposer):
    model = plan.settings.model
    total = len(plan.ids)
    if not total:
        summary.mask_targets = dict(dataset.mask_targets.get(plan.label_field) or {})
        yield 0, 0, summary
        return

    seg = segmenter or load_segmenter(model.model_path, device=model.device, dtype=model.dtype)
    check_model(plan, seg)
    if plan.captioning and proposer is None:
        proposer = load_proposer(model.captioner_path, model.tagger_model, device=model.device)

    batch_size = plan.config.batch_size
    batches = _batches(iter_rows(dataset, plan), batch_size)
    done = 0
    # the reader decodes the next batch and the writer stores the last one while the model runs
    with ThreadPoolExecutor(1, "faseg-read") as reader, ThreadPoolExecutor(1, "faseg-write") as writer:
        loading = reader.submit(_load_next, batches)
        writing = None
        while True:
            batch = loading.result()
            if batch is None:
                break
            loading = reader.submit(_load_next, batches)
            loaded, unreadable = batch
            jobs, failed = segment_loaded(loaded, plan, seg, proposer)
            if writing is None:
                prepare_run(dataset, plan)  # the first write: every check above has passed
            else:
                done += writing.result()
                yield done, total, summary
            writing = writer.submit(_write, dataset, plan, jobs, unreadable + failed, summary)
        if writing is not None:
            done += writing.result()
    summary.mask_targets = dict(dataset.mask_targets.get(plan.label_field) or {})
    yield done, total, summary


def _model_path(segmenter, default):
    """The checkpoint a loaded segmenter came from (recorded with the run)."""
    unet = getattr(segmenter, "unet", None)
    return getattr(getattr(unet, "config", None), "_name_or_path", None) or default


def _batches(chunks, size):
    """Batches of ``size`` rows from a stream of row chunks."""
    pending = []
    for chunk in chunks:
        pending.extend(chunk)
        while len(pending) >= size:
            yield pending[:size]
            pending = pending[size:]
    if pending:
        yield pending


def _load_next(batches):
    """The next batch's rows, read and decoded (in the reader thread), or None at the end."""
    rows = next(batches, None)
    return None if rows is None else load_rows(rows)


def _write(dataset, plan, jobs, failed, summary):
    outputs = finish_outputs(jobs, plan) + failed
    write_outputs(dataset, plan, outputs, summary)
    return len(outputs)

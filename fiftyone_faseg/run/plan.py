"""What a run will do, worked out before its first write (:func:`plan_run`, after the
checks of :mod:`fiftyone_faseg.run.checks`), and the writes that start and end it.

The run holds its field's lease (:mod:`fiftyone_faseg.run.leases`, taken by
:func:`fiftyone_faseg.run.segment.begin_run` before the checks) until its record is final.
Only then does :func:`prepare_run` write: the classes' pixel values (atomic claims, see
:mod:`fiftyone_faseg.run.targets`), the field schema and the run's "in progress" record;
:func:`finish_run` writes the final record after the last sample. A resumed run finishes
an interrupted overwrite: labels the overwrite did not rewrite yet are redone.
"""

import logging
import os
import threading
from dataclasses import dataclass, field

import fiftyone as fo

from . import checks
from . import classes as fcl
from . import targets as ftg
from ..fields import candidates_field, heatmap_field, scores_field, side_fields
from .parts import NO_CLASSES
from .settings import RunRecord, RunSettings

logger = logging.getLogger(__name__)


def files_root(dataset, output_dir=None):
    """The folder a run's files go under: unique per dataset (a clone gets its own), so
    two datasets never write each other's files. ``<output_dir or FiftyOne's dataset
    dir/faseg>/<dataset id>``."""
    base = output_dir or os.path.join(fo.config.default_dataset_dir, "faseg")
    return os.path.join(os.path.abspath(os.path.expanduser(base)), str(dataset._doc.id))


def file_path(root, field_name, sample_id, ext):
    """Where one sample's file of one field lives (field names are checked to be safe path segments)."""
    return os.path.join(root, field_name, "%s.%s" % (sample_id, ext))


@dataclass
class RunPlan:
    """A validated run: what it does, over which samples, with which classes. Picklable.

    Attributes:
        dataset_name: the dataset written
        settings: the :class:`fiftyone_faseg.run.settings.RunSettings`
        config: the :class:`faseg_core.FASegConfig` every batch runs with
        record: the :class:`fiftyone_faseg.run.settings.RunRecord` the run writes (its
            ``root`` is the folder of the run's files, :func:`files_root`)
        ids: ids of the samples to process, in the collection's order
        skipped: ids left alone (``skip_existing``: already complete)
        names: every class name the run may write
        class_ids: ``{name: pixel value}``, set by :func:`prepare_run`
        lease: the field's :class:`fiftyone_faseg.run.leases.FieldLease`, held by the run
        written: how many of ``ids`` have been written (the record is final after the last)
    """

    dataset_name: str
    settings: RunSettings
    config: object
    record: RunRecord
    ids: list
    skipped: list
    names: list
    gt_values: dict = None
    vocabulary: object = None
    per_sample_field: str = None
    class_ids: dict = field(default_factory=dict)
    lease: object = field(default=None, repr=False, compare=False)
    written: int = 0

    @property
    def root(self):
        return self.record.root

    @property
    def label_field(self):
        return self.settings.output.label_field

    @property
    def classes_from(self):
        """The kind of the run's class source (see :mod:`fiftyone_faseg.run.classes`)."""
        return self.settings.classes.kind

    @property
    def tagging(self):
        return self.classes_from == "tagger"

    @property
    def captioning(self):
        return self.tagging or self.settings.prompt.use_captioner


def plan_run(samples, settings, config=None, vocabulary=None):
    """Checks a run over ``samples`` and works out what it will do; writes nothing.

    Args:
        samples: a :class:`fiftyone.core.collections.SampleCollection` of images
        settings: a :class:`fiftyone_faseg.run.settings.RunSettings`
        config (None): the :class:`faseg_core.FASegConfig` to start from (paper defaults)
        vocabulary (None): a :class:`faseg_core.candidates.Vocabulary` for the tagger

    Returns:
        a :class:`RunPlan`

    Raises:
        ValueError: anything that would make the run lose, mislabel or misplace data
    """
    checks.check_collection(samples)
    dataset = samples._dataset
    config = run_config(settings, config)
    source = settings.classes
    if source is None:
        raise ValueError(NO_CLASSES)
    checks.check_fields(dataset, settings)
    checks.check_folders(settings)

    record = RunRecord.snapshot(settings, config, files_root(dataset, settings.output.output_dir))
    ids = [str(i) for i in samples.values("_id")]
    ids, skipped, record = checks.check_existing(dataset, ids, settings, record)

    per_sample_field = None
    if source.kind == fcl.CANDIDATES:
        per_sample_field = source.classes_field or candidates_field(settings.output.label_field)
    if source.kind == "tagger":
        vocabulary = fcl.tagger_vocabulary(dataset, list(source.names), source.gt_field, vocabulary)
    names = fcl.run_class_names(dataset, ids, list(source.names), source.kind, source.gt_field,
                                vocabulary, per_sample_field)
    if not names and ids:
        raise ValueError("no candidate classes for this run: pass classes=[...], use another classes_from, "
                         "or check '%s'" % (per_sample_field or source.gt_field))
    checks.check_kept(dataset, settings, names)
    return RunPlan(
        dataset_name=dataset.name,
        settings=settings,
        config=config,
        record=record,
        ids=ids,
        skipped=skipped,
        names=names,
        gt_values=fcl.gt_classes(dataset, source.gt_field) if source.kind == "gt_field" else None,
        vocabulary=vocabulary if source.kind == "tagger" else None,
        per_sample_field=per_sample_field,
    )


def run_config(settings, config=None):
    """The :class:`faseg_core.FASegConfig` of a run: ``config`` (paper defaults) with the
    settings' :class:`fiftyone_faseg.run.settings.Overrides` applied (an image size moves
    the attention-grid weights with it) and its model's ``dtype``."""
    dtype = settings.model.dtype
    return settings.overrides.apply(config, **({"dtype": dtype} if dtype else {}))


def check_model(plan, segmenter):
    """Each class name the run may use fits a CLIP prompt of ``segmenter``'s tokenizer."""
    from faseg_core.tokens import build_class_prompts

    for name in plan.names:
        build_class_prompts(segmenter.tokenizer, [name])  # raises, naming the class


_SCHEMA_LOCK = threading.Lock()  # a dataset object is shared by every run of this process


def prepare_run(dataset, plan):
    """The run's first writes, once everything is checked: pixel values for its classes
    (atomic, per value), the typed fields it writes, and its record (a new revision).
    Returns the plan with ``class_ids`` set."""
    with _SCHEMA_LOCK:
        return _prepare(dataset, plan)


def _prepare(dataset, plan):
    gt_field, output = plan.settings.classes.gt_field, plan.settings.output
    preferred = fcl.gt_classes(dataset, gt_field) if gt_field else None
    plan.class_ids = ftg.claim_values(dataset, plan.label_field, plan.names, preferred)
    schema = dataset.get_field_schema()
    wanted = side_fields(plan.label_field)
    if not output.store_scores:
        wanted.pop(scores_field(plan.label_field))
    if not output.heatmap:
        wanted.pop(heatmap_field(plan.label_field))
    new = {name: kind(doc_type) if doc_type else kind() for name, (kind, doc_type) in wanted.items()
           if name not in schema}
    if new:
        dataset._merge_sample_field_schema(new)  # one schema update (what set_values does), not one per field
    plan.record.write(dataset, plan.label_field)  # "in progress" (see RunRecord.started)
    return plan


def finish_run(dataset, plan):
    """Writes the run's final record (a new revision) once its last sample is written, and
    gives its field's lease back. A run that continued a pending overwrite stays pending
    while labels of the earlier run are left (outside this run's samples)."""
    plan.record = finish_record(dataset, plan.label_field, plan.record)
    if plan.lease is not None:
        plan.lease.release()
    return plan


def finish_record(dataset, field_name, record):
    """Writes and returns the final record of a write into ``field_name`` that started
    with ``record`` (still in progress while labels of an earlier write made otherwise
    are left)."""
    stale = checks.stale_labels(dataset, field_name, record.run_id) if record.pending else 0  # a count over every sample
    record = record.finished(stale)
    record.write(dataset, field_name)
    return record

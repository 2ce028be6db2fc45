"""Fixing candidate classes and segmenting only those samples again.

FA-Seg segments an image into its candidate classes (``<label_field>_candidates``): a
missing class cannot be found and a wrong one takes pixels (the paper's ground-truth
candidates lift VOC from 64.0 to 69.7 mIoU). :func:`set_candidates` edits a view's
candidates (what the ``edit_candidates`` operator saves) and :func:`rerun` segments
only that view again, each sample with its own candidates, with the settings the run
recorded (model, threshold, image size, where masks and scores go).

Example usage::

    from fiftyone_faseg.run.rerun import rerun, set_candidates

    view = dataset.match_tags("review")
    set_candidates(view, "faseg", ["dog"], mode="add")
    rerun(view, "faseg")
"""

import fiftyone.core.labels as fol

from faseg_core.tokens import clean_classes

from ..fields import candidates_field
from .leases import FieldLease
from .parts import CandidateClasses, ModelSpec, WritePolicy
from .settings import RunRecord, RunSettings

USER = "user"
MODES = ("replace", "add", "remove")


def get_candidates(samples, label_field):
    """Returns a dict mapping sample IDs to their candidate class names (None: no candidates)."""
    name = candidates_field(label_field)
    if name not in samples.get_field_schema():
        return {i: None for i in samples.values("id")}
    ids, labels = samples.values(["id", name + ".classifications.label"])
    return dict(zip(ids, labels))


def vocabulary(samples, label_field):
    """Every class name the run knows: its mask_targets, then any other candidate."""
    dataset = samples._dataset
    names = [str(n) for v, n in sorted((dataset.mask_targets.get(label_field) or {}).items()) if int(v) != 0]
    for labels in get_candidates(samples, label_field).values():
        names.extend(n for n in labels or [] if n not in names)
    return names


def set_candidates(samples, label_field, classes, mode="replace"):
    """Edits the candidate classes of every sample of a collection.

    Classes a sample already had keep their confidence and source; new ones get
    ``source="user"`` and confidence 1.

    Args:
        samples: a :class:`fiftyone.core.collections.SampleCollection`
        label_field: the run's Segmentation field (candidates are in
            ``<label_field>_candidates``)
        classes: class names
        mode ("replace"): ``"replace"`` (each sample gets exactly ``classes``, in that
            order), ``"add"`` (appended when absent) or ``"remove"``

    Returns:
        the number of samples edited
    """
    if mode not in MODES:
        raise ValueError("unknown mode %r: choose one of %s" % (mode, MODES))
    if isinstance(classes, str):
        raise TypeError("classes must be a list of names, not the string %r" % classes)
    names = clean_classes([str(name) for name in classes or []])
    field = candidates_field(label_field)
    has_field = field in samples.get_field_schema()
    ids = samples.values("id")
    current = samples.values(field) if has_field else [None] * len(ids)
    edited = {}
    for sample_id, cands in zip(ids, current):
        old = {c.label: c for c in (cands.classifications if cands else [])}
        if mode == "replace":
            keep = names
        elif mode == "add":
            keep = list(old) + [n for n in names if n not in old]
        else:
            keep = [n for n in old if n not in names]
        edited[sample_id] = fol.Classifications(
            classifications=[old.get(n) or fol.Classification(label=n, confidence=1.0, source=USER) for n in keep]
        )
    if edited:
        with FieldLease(samples._dataset, label_field, "candidate edit"):  # never while a run writes the field
            samples.set_values(field, edited, key_field="id")
    return len(edited)


def rerun_settings(samples, label_field="faseg", **overrides):
    """The :class:`fiftyone_faseg.run.settings.RunSettings` of a rerun: the settings the run
    recorded (its class subset too), each sample's own candidates, overwrite on; ``overrides`` that are not
    None replace recorded settings (a field keeps one set of settings: a rerun of some
    samples with another threshold is refused by the run's checks)."""
    record = RunRecord.read(samples._dataset, label_field)
    if record is None:
        raise ValueError("'%s' was not made by an FA-Seg run: nothing to rerun" % label_field)
    settings = RunSettings(output=record.output_spec(label_field), classes=CandidateClasses(),
                           model=ModelSpec(model_path=record.model_path), overrides=record.overrides(),
                           write=WritePolicy.OVERWRITE)
    return settings.replace(**{k: v for k, v in overrides.items() if v is not None})


def rerun(samples, label_field="faseg", progress=None, **kwargs):
    """Segments the samples of a collection again, each into its own (edited)
    ``<label_field>_candidates``, with the settings the run recorded.

    Only these samples are written; new class names get new pixel values in
    ``dataset.mask_targets[label_field]`` (existing values are kept).

    Args:
        samples: a :class:`fiftyone.core.collections.SampleCollection`
        label_field ("faseg"): the run's Segmentation field
        progress (None): True for a progress bar, or ``callable(done, total)``
        **kwargs: overrides of :func:`fiftyone_faseg.run.segment.iter_segment_samples`
            arguments (``model_path``, ``threshold``, ``segmenter``, ...)

    Returns:
        a :class:`fiftyone_faseg.run.segment.RunSummary`
    """
    from .segment import segment_samples

    if candidates_field(label_field) not in samples.get_field_schema():
        raise ValueError(
            "'%s' has no candidates to rerun with: run run_faseg first, or set them with "
            "edit_candidates" % candidates_field(label_field)
        )
    loaded = {k: kwargs.pop(k) for k in ("segmenter", "proposer", "config", "vocabulary") if k in kwargs}
    return segment_samples(samples, progress=progress, settings=rerun_settings(samples, label_field, **kwargs),
                           operation="rerun", **loaded)

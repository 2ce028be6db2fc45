"""What a run is asked to do (:class:`RunSettings`) and what it recorded (:class:`RunRecord`).

One settings object travels from every entry point to the run: the SDK
(:func:`fiftyone_faseg.segment_samples` keywords), :class:`fiftyone_faseg.FASegModel`,
the operators (:meth:`RunSettings.from_params` of a form's ``ctx.params``), queued
delegated runs and Ray workers (:meth:`RunSettings.to_params`), the way FiftyOne gives
each method one config class.

A run writes a :class:`RunRecord` into its label field's ``info["faseg"]``: the settings
its masks were made with (re-threshold and rerun read them back) and a ``revision``
that changes whenever anything writes the field, so an evaluation can tell it is stale.
Importing this module loads neither torch nor FiftyOne.

Adding a setting. FA-Seg's own settings are the fields of :class:`faseg_core.FASegConfig`,
listed nowhere else: :attr:`RunSettings.overrides` takes any of them (also as a keyword
and attribute), and :func:`fiftyone_faseg.run.plan.run_config` applies them for runs, reruns,
:class:`fiftyone_faseg.FASegModel`, the protocol harness and the Ray command line (one flag
per scalar field). A new FASegConfig knob therefore takes one edit (the field) plus its
form widget in ``operators/run.py`` (and its range in ``fiftyone_faseg/limits.py`` if it
has one); before this, it took about eleven edits in seven files (``RunSettings`` field and
docstring, ``run_config``'s list, ``RunRecord`` field and ``CONSISTENT``, the record built in
``plan.py``, ``rerun.py``, the harness's ``make_config`` and ``run_protocol``, the protocol
CLI, the form). A knob that changes what a pixel means is recorded, compared and rerun
with (:attr:`RunRecord.config`, :func:`recorded_config`) unless it only changes how a run
runs: then add it to :data:`NOT_RECORDED`. The protocol CLI (``faseg-protocol``) still
has flags only for ``--threshold``, ``--image-size`` and ``--batch-size``
(:func:`fiftyone_faseg.protocol.run_protocol` takes any field as a keyword).
"""

import dataclasses
import os
import uuid
from dataclasses import dataclass, field

from ..constants import DEFAULT_CAPTIONER, DEFAULT_MODEL, DEFAULT_TAGGER

INFO_KEY = "faseg"


def folder_param(value):
    """A folder parameter: the App's file picker gives ``{"absolute_path": ...}``, the SDK a path."""
    if isinstance(value, dict):
        value = value.get("absolute_path") or value.get("path")
    return os.fspath(value) if value else None


@dataclass(frozen=True)
class RunSettings:
    """Settings of one FA-Seg run over a collection (FA-Seg's own settings: ``config``).

    Args:
        label_field ("faseg"): the Segmentation field to write (plus ``_candidates``,
            ``_caption``, ``_error`` and, when asked, ``_scores`` and ``_heatmap``)
        classes (()): class names (``classes_from="list"``), or the tagger's vocabulary
        classes_from (None): ``"list"``, ``"mask_targets"``, ``"gt_field"``, ``"tagger"``
            or ``"candidates"``; ``"list"`` when ``classes`` are given
        classes_field (None): with ``classes_from="candidates"``, each sample's classes
            (Classifications or a list of names) instead of ``<label_field>_candidates``
        gt_field (None): a ground truth Segmentation field with ``mask_targets``
        caption_field (None): a string field holding each sample's caption
        use_captioner (False): caption images with BLIP (always on with the tagger)
        captioner_path (DEFAULT_CAPTIONER): a BLIP Hub id or local folder
        tagger_model (DEFAULT_TAGGER): ``(open_clip model name or folder, pretrained tag or file)``
        model_path (DEFAULT_MODEL): a Hugging Face Hub id or a local SD-1.x folder
        overrides ({}): ``{field: value}`` of :class:`faseg_core.FASegConfig` (paper
            defaults) this run changes; any FASegConfig field is also a keyword of its
            own (``RunSettings(threshold=0.5, pamr=True)``) and an attribute
            (``settings.threshold``: None when not overridden)
        skip_existing (False): process only samples of the dataset without ``label_field``
        overwrite (False): replace existing labels of this run's field
        output_dir (None): write masks (and score maps, heatmaps) under this folder
        store_scores (False): keep each sample's refined score maps (float16 files)
        heatmap (False): store the top class's score as ``<label_field>_heatmap``
        keep_classes (None): only these classes' scores label pixels (the others become
            background or lose to the kept ones), as a re-threshold with ``classes``
            does; a rerun keeps its field's recorded subset
        device (None), dtype (None): where and how the model runs
    """

    label_field: str = "faseg"
    classes: tuple = ()
    classes_from: str = None
    classes_field: str = None
    gt_field: str = None
    caption_field: str = None
    use_captioner: bool = False
    captioner_path: str = DEFAULT_CAPTIONER
    tagger_model: tuple = DEFAULT_TAGGER
    model_path: str = DEFAULT_MODEL
    overrides: dict = field(default_factory=dict)
    skip_existing: bool = False
    overwrite: bool = False
    output_dir: str = None
    store_scores: bool = False
    heatmap: bool = False
    keep_classes: tuple = None
    device: str = None
    dtype: str = None

    def __post_init__(self):
        # normalise what arrives from forms, JSON and keywords, so equal settings compare equal
        object.__setattr__(self, "overrides", check_overrides(self.overrides))
        if isinstance(self.classes, str):
            raise TypeError("`classes` must be a list of names, not the string %r" % self.classes)
        fix = object.__setattr__
        fix(self, "classes", tuple(str(c).strip() for c in (self.classes or ()) if c is not None and str(c).strip()))
        fix(self, "tagger_model", tuple(self.tagger_model))
        fix(self, "label_field", self.label_field or "faseg")
        fix(self, "output_dir", folder_param(self.output_dir))
        fix(self, "model_path", os.fspath(self.model_path) if self.model_path else DEFAULT_MODEL)
        for name in ("classes_from", "classes_field", "gt_field", "caption_field"):
            fix(self, name, getattr(self, name) or None)
        if self.dtype is not None and not isinstance(self.dtype, str):
            fix(self, "dtype", str(self.dtype).replace("torch.", ""))
        if self.classes_from is None and self.classes:
            fix(self, "classes_from", "list")
        if isinstance(self.keep_classes, str):
            raise TypeError("`keep_classes` must be a list of names, not the string %r" % self.keep_classes)
        fix(self, "keep_classes", tuple(sorted({str(c) for c in self.keep_classes})) if self.keep_classes else None)

    def __getattr__(self, name):
        # FA-Seg's own settings read as attributes (None: not overridden)
        if name in fa_seg_settings() and name not in _OWN:
            return self.__dict__.get("overrides", {}).get(name)
        raise AttributeError("%r object has no attribute %r" % (type(self).__name__, name))

    @classmethod
    def fields(cls):
        """Every keyword the settings take: their own fields and FASegConfig's."""
        return list(_OWN) + [n for n in fa_seg_settings() if n not in _OWN]

    @classmethod
    def from_kwargs(cls, **kwargs):
        """Settings from keywords, with a clear error for an unknown one."""
        unknown = sorted(set(kwargs) - set(cls.fields()))
        if unknown:
            raise TypeError("unknown run settings %s: choose among %s" % (unknown, cls.fields()))
        return cls(**kwargs)

    @classmethod
    def from_params(cls, params):
        """Settings from an operator's ``ctx.params`` (unknown keys, e.g. ``view_target``, are ignored;
        empty values mean the default)."""
        known = set(cls.fields())
        kwargs = {k: v for k, v in (params or {}).items() if k in known and v not in (None, "")}
        kwargs.update((params or {}).get("overrides") or {})
        tagger = params.get("tagger_model"), params.get("tagger_pretrained")
        if isinstance(tagger[0], str):
            kwargs["tagger_model"] = (tagger[0] or DEFAULT_TAGGER[0], tagger[1] or DEFAULT_TAGGER[1])
        return cls(**kwargs)

    def to_params(self):
        """JSON-ready parameters that :meth:`from_params` turns back into these settings."""
        params = dataclasses.asdict(self)
        params.update(params.pop("overrides"))  # flat, as the form gives them
        params["classes"] = list(self.classes)
        params["keep_classes"] = list(self.keep_classes) if self.keep_classes else None
        params["tagger_model"], params["tagger_pretrained"] = self.tagger_model
        return params

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


_OWN = tuple(f.name for f in dataclasses.fields(RunSettings))
_dataclass_init = RunSettings.__init__


def _init(self, *args, overrides=None, **kwargs):
    # FASegConfig fields given as keywords join ``overrides`` (the one list of FA-Seg's settings)
    fa_seg = {k: kwargs.pop(k) for k in list(kwargs) if k not in _OWN and k in fa_seg_settings()}
    _dataclass_init(self, *args, overrides={**(overrides or {}), **fa_seg}, **kwargs)


_init.__doc__ = _dataclass_init.__doc__
RunSettings.__init__ = _init


def fa_seg_settings():
    """Every knob of FA-Seg itself: the fields of :class:`faseg_core.FASegConfig`."""
    from faseg_core.config import FASegConfig

    return tuple(f.name for f in dataclasses.fields(FASegConfig))


def check_overrides(overrides):
    """``overrides`` as a new dict without None values, each key a FASegConfig field."""
    overrides = {k: v for k, v in dict(overrides or {}).items() if v is not None}
    unknown = sorted(set(overrides) - set(fa_seg_settings()))
    if unknown:
        raise TypeError("unknown FA-Seg settings %s: choose among the fields of faseg_core.FASegConfig %s"
                        % (unknown, list(fa_seg_settings())))
    return overrides


@dataclass(frozen=True)
class RunRecord:
    """What a write recorded in its label field's ``info["faseg"]``: everything that
    makes a pixel value of the field mean what it means.

    A write (run, rerun, re-threshold) records ``in_progress=True`` before its first
    sample and its final record after its last one: a record is final only when the
    field's data is. Each label a write stores carries the write's ``run_id``
    (``<label>.faseg_run``); when a write replaces labels made otherwise (an
    ``overwrite`` with other settings) its record is ``pending`` until no label of an
    earlier write is left, so a resumed run redoes exactly the samples not yet rewritten.

    Args:
        threshold, image_size, model_path, pamr: how the masks were made
        output_dir, store_scores, heatmap: what was stored, and where
        root: the folder under which the run's files live (unique per dataset)
        source_field (None): the field a re-threshold read its scores from (None: its own)
        source_revision (None): that field's ``scores_revision`` when they were read
        scores_revision (None): changes whenever a run or rerun writes the field's scores
            (not when a re-threshold rewrites its masks)
        classes (None): the class subset whose scores label pixels (a re-threshold's
            ``classes``, a run's ``keep_classes``); None: every class
        config (None): the other :class:`faseg_core.FASegConfig` fields the run
            overrode that change what a pixel means (:func:`recorded_config`; None: none)
        classes_from (None), class_list (None): where a run took its classes from, and
            the classes (or the tagger's vocabulary) it was given
        run_id (None): the write whose labels the field holds (see above)
        in_progress (False): a write has started and not finished
        pending (False): labels of an earlier write, made otherwise, are not yet replaced
        revision: changes whenever anything writes the field (evaluations compare it)
    """

    threshold: float = None
    image_size: int = None
    model_path: str = None
    pamr: bool = False
    output_dir: str = None
    store_scores: bool = False
    heatmap: bool = False
    root: str = None
    source_field: str = None
    source_revision: str = None
    scores_revision: str = None
    classes: list = None
    config: dict = None
    classes_from: str = None
    class_list: list = None
    run_id: str = None
    in_progress: bool = False
    pending: bool = False
    revision: str = field(default_factory=lambda: uuid.uuid4().hex)

    @classmethod
    def read(cls, dataset, label_field):
        """The record of ``label_field`` as stored now in the database (None when no
        FA-Seg write made the field)."""
        info = _stored_info(dataset, label_field)
        data = info.get(INFO_KEY)
        if not isinstance(data, dict):
            return None
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def write(self, dataset, label_field):
        """Stores this record in ``label_field``'s info (the field must exist): one
        update of that field's entry, no other field's info rewritten."""
        import fiftyone.core.odm as foo

        data = dataclasses.asdict(self)
        datasets = foo.get_db_conn().datasets
        found = datasets.update_one(
            {"_id": dataset._doc.id, "sample_fields": {"$elemMatch": {"name": label_field, "info": {"$type": "object"}}}},
            {"$set": {"sample_fields.$.info." + INFO_KEY: data}},
        )
        if not found.matched_count:
            found = datasets.update_one({"_id": dataset._doc.id, "sample_fields.name": label_field},
                                        {"$set": {"sample_fields.$.info": {INFO_KEY: data}}})
        if not found.matched_count:
            raise ValueError("field '%s' of dataset '%s' does not exist: cannot record a run in it"
                             % (label_field, dataset.name))
        # this process's copies follow (a later dataset.save() writes what the database holds)
        fld = dataset.get_field(label_field)
        if fld is not None:
            fld.info = {**(fld.info or {}), INFO_KEY: data}
            doc = dataset._sample_doc_cls._get_field_doc(label_field, allow_missing=True)
            if doc is not None:
                doc.info = dict(fld.info)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def new_revision(self):
        return dataclasses.replace(self, revision=uuid.uuid4().hex)

    CONSISTENT = ("threshold", "image_size", "model_path", "pamr", "config", "store_scores", "classes", "source_field")

    def differences(self, other):
        """``{setting: (this, other)}`` where masks made under ``other`` would not mean what
        masks made under this record do (or would lack what it promises, e.g. stored scores)."""
        return {k: (getattr(self, k), getattr(other, k)) for k in self.CONSISTENT
                if _norm(getattr(self, k)) != _norm(getattr(other, k))}

    def started(self, old, replaces):
        """This record as a write writes it before its first sample, over a field recorded
        as ``old`` (or None); ``replaces``: the write replaces labels made otherwise.

        A write that continues a pending one with the same settings keeps its ``run_id``
        (labels either wrote are current); any other gets a new one."""
        if old is not None and old.pending and not old.differences(self):
            return self.replace(in_progress=True, pending=True, run_id=old.run_id).new_revision()
        pending = bool(replaces or (old is not None and old.pending))
        return self.replace(in_progress=True, pending=pending, run_id=uuid.uuid4().hex).new_revision()

    def finished(self, stale):
        """The record a write writes after its last sample; ``stale``: how many labels of
        the field an earlier write made otherwise are left (pending: not final yet)."""
        pending = bool(self.pending and stale)
        return self.replace(in_progress=pending, pending=pending).new_revision()


# FASegConfig fields that change how a run runs, not what its masks mean (not recorded)
NOT_RECORDED = ("batch_size", "dtype", "store_dtype", "attention_chunk", "attention_kernel", "compile")
# recorded as fields of their own, as records written before ``RunRecord.config`` hold them
OWN_RECORD_FIELDS = ("threshold", "image_size", "pamr")


def recorded_config(overrides, own=OWN_RECORD_FIELDS):
    """``RunRecord.config`` of a run with these FASegConfig ``overrides``: those that change
    a pixel's meaning (every field but :data:`NOT_RECORDED`), less ``own`` (recorded
    elsewhere), None when there are none."""
    kept = {k: v for k, v in (overrides or {}).items() if k not in NOT_RECORDED + tuple(own)}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in kept.items()} or None


def _norm(value):
    if isinstance(value, dict):  # JSON and BSON give lists for tuples; {} is no override
        return tuple(sorted((str(k), _norm(v)) for k, v in value.items())) or None
    return tuple(value) if isinstance(value, list) else value


def _stored_info(dataset, label_field):
    import fiftyone.core.odm as foo

    doc = foo.get_db_conn().datasets.find_one(
        {"_id": dataset._doc.id}, {"sample_fields": {"$elemMatch": {"name": label_field}}}
    ) or {}
    fields = doc.get("sample_fields") or []
    return (fields[0].get("info") or {}) if fields else {}

"""What a run is asked to do (:class:`RunSettings`) and what it recorded (:class:`RunRecord`).

One settings object travels from every entry point to the run: the SDK
(:func:`fiftyone_faseg.segment_samples` keywords), :class:`fiftyone_faseg.FASegModel`,
the operators (:meth:`RunSettings.from_params` of a form's ``ctx.params``), queued
delegated runs and Ray workers (:meth:`RunSettings.to_params`), the way FiftyOne gives
each method one config class.

:class:`RunSettings` is made of typed parts (:mod:`fiftyone_faseg.run.parts`), each a small
frozen dataclass that checks itself when built:

-   :class:`ModelSpec`: which checkpoints run, where and how (``model_path``, ``device``,
    ``dtype``, ``captioner_path``, ``tagger_model``)
-   the class source (``settings.classes``), one kind per way of choosing classes
    (:class:`ClassList`, :class:`MaskTargetClasses`, :class:`GroundTruthClasses`,
    :class:`TaggerClasses`, :class:`CandidateClasses`; ``kind`` names it), each holding
    only what it uses, so an incomplete or contradictory choice cannot be built
-   :class:`PromptSpec`: where each sample's caption comes from
-   :class:`Overrides`: the :class:`faseg_core.FASegConfig` fields the run changes
-   :class:`OutputSpec`: what the run writes, and where
-   :class:`WritePolicy`: what happens to labels already there (one value: a run cannot
    both skip and overwrite them)

Users pass flat keywords (``segment_samples(dataset, classes=[...], overwrite=True,
threshold=0.5)``); :meth:`RunSettings.from_kwargs` is the one place that sorts them into
parts, and :meth:`RunSettings.to_kwargs` the one place that flattens them back (form
params, JSON, :meth:`RunSettings.replace`). Code reads the parts
(``settings.output.label_field``, ``settings.classes.kind``).

A run writes a :class:`RunRecord` into its label field's ``info["faseg"]``: a snapshot of
its settings' parts and of the config it built (:meth:`RunRecord.snapshot`; re-threshold
and rerun read it back) and a ``revision`` that changes whenever anything writes the
field, so an evaluation can tell it is stale. Importing this module loads neither torch
nor FiftyOne.

Adding a setting. Each flat keyword is a field of one part, listed nowhere else:
:meth:`RunSettings.fields`, :meth:`RunSettings.from_kwargs`, :meth:`RunSettings.to_params`,
the operators' SDK call and both command lines (:func:`add_flags`) read the parts.

-   A FASegConfig knob (say ``edge_sigma: float``) is one edit: the field of
    :class:`faseg_core.FASegConfig` (with its check). It is then a keyword of
    ``segment_samples``, ``RunSettings.from_kwargs``, :class:`fiftyone_faseg.FASegModel`
    and ``run_protocol``, a form param, a flag of ``faseg-ray`` and ``faseg-protocol``
    (scalar fields), applied by :meth:`Overrides.apply`, recorded in
    :attr:`RunRecord.config`, compared and rerun with. For the App, add its form widget in
    ``operators/run.py`` and its range in ``fiftyone_faseg/limits.py`` (App input is
    untrusted: until it has a rule there, the App refuses it, and a test says so); put it
    in :data:`NOT_RECORDED` if it only changes how a run runs. Two edits in two files
    without the App, four in three with it; before the parts, four in three without it
    (``faseg-protocol`` had three hand-made flags: a flag and its pass-through in
    ``protocol/cli.py``).
-   An output option (say ``overlay: bool``, a colour overlay per sample) is a field (and
    its ``Args`` line) of :class:`fiftyone_faseg.run.parts.OutputSpec`; to record it and
    have reruns keep it, a field of the same name in :class:`RunRecord`
    (:meth:`RunRecord.snapshot` and :meth:`RunRecord.output_spec` copy same-named
    fields). Then what it does: its effect in ``outputs.finish_outputs``, its side field
    in ``fields.side_fields`` and its check in ``checks.complete_ids`` (so ``skip_existing``
    completes it), and its form widget. Plumbing: two edits in two files (six in all, in
    five files); before the parts: four in three files (the flat field, the record field,
    the record built field by field in ``plan.py``, the settings rebuilt field by field
    in ``rerun.py``), eight in all.

A knob that changes what a pixel means must mean the same for every label of a field:
:meth:`RunRecord.differences` compares the recorded values (add a recorded output
option to :attr:`RunRecord.CONSISTENT` when it must match too).
"""

import argparse
import dataclasses
import uuid
from dataclasses import dataclass, field

from ..constants import DEFAULT_TAGGER
from .parts import (CLASS_KEYWORDS, CLASS_SOURCES, ClassSource, ModelSpec, OutputSpec, Overrides, PromptSpec,
                    WritePolicy, class_keyword, class_source, fa_seg_settings)

INFO_KEY = "faseg"
RUN_ATTR = "faseg_run"  # the attribute of each stored label naming the write that made it (RunRecord.run_id)


@dataclass(frozen=True)
class RunSettings:
    """Settings of one FA-Seg run over a collection, made of typed parts.

    Build it from the flat keywords every entry point takes with :meth:`from_kwargs`
    (``RunSettings.from_kwargs(classes=["cat"], overwrite=True, threshold=0.5)``), from
    form params with :meth:`from_params`, or from its parts.

    Args:
        output (OutputSpec()): an :class:`OutputSpec`
        classes (None): a :class:`ClassSource` (None: no classes chosen; a run refuses it)
        model (ModelSpec()): a :class:`ModelSpec`
        prompt (PromptSpec()): a :class:`PromptSpec`
        overrides (Overrides()): :class:`Overrides` (or a dict) of FASegConfig fields
        write (WritePolicy.NEW): a :class:`WritePolicy` (or its value)
    """

    output: OutputSpec = field(default_factory=OutputSpec)
    classes: ClassSource = None
    model: ModelSpec = field(default_factory=ModelSpec)
    prompt: PromptSpec = field(default_factory=PromptSpec)
    overrides: Overrides = field(default_factory=Overrides)
    write: WritePolicy = WritePolicy.NEW

    def __post_init__(self):
        for name, kind in (("output", OutputSpec), ("model", ModelSpec), ("prompt", PromptSpec)):
            if not isinstance(getattr(self, name), kind):
                raise TypeError("`%s` must be a %s, not %r: pass flat keywords to RunSettings.from_kwargs()"
                                % (name, kind.__name__, getattr(self, name)))
        if self.classes is not None and not isinstance(self.classes, ClassSource):
            raise TypeError("`classes` must be a ClassSource (e.g. ClassList(names=[...])), not %r: pass flat "
                            "keywords (classes=[...]) to RunSettings.from_kwargs()" % (self.classes,))
        if not isinstance(self.overrides, Overrides):
            object.__setattr__(self, "overrides", Overrides(self.overrides))
        object.__setattr__(self, "write", WritePolicy(self.write))

    # ------------------------------------------------------------------ flat keywords

    @classmethod
    def fields(cls):
        """Every flat keyword the settings take: their parts' and every FASegConfig field."""
        return list(_OWN_KEYWORDS) + [n for n in fa_seg_settings() if n not in _OWN_KEYWORDS]

    @classmethod
    def from_kwargs(cls, **kwargs):
        """Settings from the flat keywords users pass (:meth:`fields`; None: the default),
        with a clear error for an unknown one. Any FASegConfig field is a keyword of its
        own and joins ``overrides`` (a dict of them is also taken)."""
        return cls._from_keywords(kwargs, strict=True)

    @classmethod
    def from_params(cls, params):
        """Settings from an operator's ``ctx.params`` (unknown keys, e.g. ``view_target``, are ignored;
        empty values mean the default; class keywords the chosen class source does not use are dropped)."""
        params = dict(params or {})
        kwargs = {k: v for k, v in params.items() if k in cls.fields() and v not in (None, "")}
        tagger = params.get("tagger_model"), params.get("tagger_pretrained")
        if isinstance(tagger[0], str):
            kwargs["tagger_model"] = (tagger[0] or DEFAULT_TAGGER[0], tagger[1] or DEFAULT_TAGGER[1])
        return cls._from_keywords(kwargs, strict=False)

    @classmethod
    def _from_keywords(cls, kwargs, strict):
        unknown = sorted(set(kwargs) - set(cls.fields()))
        if unknown:
            raise TypeError("unknown run settings %s: choose among %s" % (unknown, cls.fields()))
        given = {k: v for k, v in kwargs.items() if v is not None}
        overrides = dict(given.pop("overrides", None) or {})
        overrides.update((k, given.pop(k)) for k in list(given) if k not in _OWN_KEYWORDS)

        def part(kind):
            return kind(**{f.name: given.pop(f.name) for f in dataclasses.fields(kind) if f.name in given})

        return cls(output=part(OutputSpec), model=part(ModelSpec), prompt=part(PromptSpec),
                   overrides=Overrides(overrides),
                   write=WritePolicy.of(given.pop("skip_existing", False), given.pop("overwrite", False)),
                   classes=class_source(strict=strict, **given))

    def to_kwargs(self):
        """The flat keywords that :meth:`from_kwargs` turns back into these settings."""
        kwargs = {}
        for part in (self.output, self.model, self.prompt):
            kwargs.update((f.name, getattr(part, f.name)) for f in dataclasses.fields(part))
        kwargs.update(self.write.keywords())
        if self.classes is not None:
            kwargs.update(self.classes.keywords())
        own = {k: v for k, v in self.overrides.items() if k not in kwargs}
        kwargs.update(own)
        if len(own) < len(self.overrides):  # a FASegConfig field named like a part's (dtype)
            kwargs["overrides"] = {k: v for k, v in self.overrides.items() if k not in own}
        return kwargs

    def to_params(self):
        """JSON-ready parameters that :meth:`from_params` turns back into these settings."""
        params = {k: list(v) if isinstance(v, tuple) else v for k, v in self.to_kwargs().items()}
        params["tagger_model"], params["tagger_pretrained"] = self.model.tagger_model
        return params

    def replace(self, **changes):
        """These settings with some flat keywords (:meth:`fields`) changed."""
        return type(self).from_kwargs(**{**self.to_kwargs(), **changes}) if changes else self


_OWN_KEYWORDS = tuple(dict.fromkeys(
    [f.name for f in dataclasses.fields(OutputSpec)] + list(CLASS_KEYWORDS)
    + [f.name for f in dataclasses.fields(PromptSpec)] + [f.name for f in dataclasses.fields(ModelSpec)]
    + ["overrides", "skip_existing", "overwrite"]))


def keyword_types():
    """``{flat keyword: type}`` of the settings' own keywords (FASegConfig's are
    :func:`scalar_config_fields`): what a command line makes flags of."""
    types = {f.name: f.type for kind in (OutputSpec, PromptSpec, ModelSpec) for f in dataclasses.fields(kind)}
    types.update((class_keyword(f), f.type) for c in CLASS_SOURCES.values() for f in dataclasses.fields(c))
    return {**types, "classes_from": str, "skip_existing": bool, "overwrite": bool}


def scalar_config_fields(skip=()):
    """``{name: type}`` of each :class:`faseg_core.FASegConfig` field with a scalar type
    (int, float, bool, str; optional ones too), less ``skip``: the knobs a command line
    takes as flags of their own."""
    from faseg_core.config import FASegConfig

    scalar = {"int": int, "float": float, "bool": bool, "str": str}
    found = {f.name: scalar.get(getattr(f.type, "__name__", str(f.type)).replace(" | None", ""))
             for f in dataclasses.fields(FASegConfig)}
    return {n: t for n, t in found.items() if t is not None and n not in skip}


def add_flags(group, types, help=None):
    """Adds one flag per ``{name: type}`` to an argparse parser or group (``--image-size``
    for ``image_size``), each None when not given: a bool is ``--x/--no-x``. The one
    helper of the ``faseg-ray`` and ``faseg-protocol`` command lines."""
    for name, kind in types.items():
        flag, text = "--" + name.replace("_", "-"), (help or {}).get(name)
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif kind is tuple:
            group.add_argument(flag, nargs="+", default=None, help=text)
        else:
            group.add_argument(flag, type=kind, default=None, help=text)
    return group


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
    def snapshot(cls, settings, config, root):
        """The record of a run with ``settings`` (a :class:`RunSettings`) and the
        :class:`faseg_core.FASegConfig` it built, its files under ``root``: the one place
        a record is made from settings (re-threshold and rerun read it back)."""
        source, output = settings.classes, settings.output
        # the output options recorded are those named alike in both (output_dir, store_scores, heatmap)
        same = {f.name: getattr(output, f.name) for f in dataclasses.fields(output) if f.name in _RECORD_FIELDS}
        return cls(threshold=config.threshold, image_size=config.image_size, model_path=settings.model.model_path,
                   pamr=bool(config.pamr), config=recorded_config(settings.overrides), root=root,
                   classes=list(output.keep_classes) if output.keep_classes else None,
                   classes_from=source.kind if source is not None else None,
                   class_list=list(source.names) or None if source is not None else None,
                   scores_revision=uuid.uuid4().hex, **same)

    def output_spec(self, label_field):
        """The :class:`OutputSpec` of the run recorded, writing ``label_field`` (a rerun's)."""
        same = {f.name: getattr(self, f.name) for f in dataclasses.fields(OutputSpec) if f.name in _RECORD_FIELDS}
        return OutputSpec(label_field=label_field, keep_classes=self.classes, **same)

    def overrides(self):
        """The :class:`Overrides` of the run recorded (those that change what a pixel means)."""
        own = {k: getattr(self, k) for k in OWN_RECORD_FIELDS}
        return Overrides({**(self.config or {}), **own})

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


_RECORD_FIELDS = frozenset(f.name for f in dataclasses.fields(RunRecord))

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

"""The typed parts of a run's settings (:class:`fiftyone_faseg.run.settings.RunSettings`).

Each part is a small frozen dataclass that checks itself when built: :class:`ModelSpec`,
a class source (one kind per way of choosing classes, told apart by ``kind``),
:class:`PromptSpec`, :class:`Overrides` (FA-Seg's own knobs), :class:`OutputSpec` and
:class:`WritePolicy`. Importing this module loads neither torch nor FiftyOne.
"""

import dataclasses
import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from ..constants import DEFAULT_CAPTIONER, DEFAULT_MODEL, DEFAULT_TAGGER


def folder_param(value):
    """A folder parameter: the App's file picker gives ``{"absolute_path": ...}``, the SDK a path."""
    if isinstance(value, dict):
        value = value.get("absolute_path") or value.get("path")
    return os.fspath(value) if value else None


def _names(value, keyword):
    """Class names as a tuple of stripped, non-empty strings (a lone string is refused)."""
    if isinstance(value, str):
        raise TypeError("`%s` must be a list of names, not the string %r" % (keyword, value))
    return tuple(str(c).strip() for c in (value or ()) if c is not None and str(c).strip())


def _set(obj, **values):
    for name, value in values.items():
        object.__setattr__(obj, name, value)


@dataclass(frozen=True)
class ModelSpec:
    """Which checkpoints a run uses, where and how.

    Args:
        model_path (DEFAULT_MODEL): a Hugging Face Hub id or a local SD-1.x folder
        device (None), dtype (None): where and how the model runs (None: the best available)
        captioner_path (DEFAULT_CAPTIONER): a BLIP Hub id or local folder (used when captioning)
        tagger_model (DEFAULT_TAGGER): ``(open_clip model name or folder, pretrained tag or
            file)`` (used by :class:`TaggerClasses`)
    """

    model_path: str = DEFAULT_MODEL
    device: str = None
    dtype: str = None
    captioner_path: str = DEFAULT_CAPTIONER
    tagger_model: tuple = DEFAULT_TAGGER

    def __post_init__(self):
        tagger = tuple(self.tagger_model or DEFAULT_TAGGER)
        if len(tagger) != 2:
            raise ValueError("`tagger_model` must be (open_clip model or folder, pretrained tag or file), not %r"
                             % (self.tagger_model,))
        dtype = self.dtype
        if dtype is not None and not isinstance(dtype, str):
            dtype = str(dtype).replace("torch.", "")
        _set(self, model_path=os.fspath(self.model_path) if self.model_path else DEFAULT_MODEL, tagger_model=tagger,
             dtype=dtype or None, device=str(self.device) if self.device else None,
             captioner_path=os.fspath(self.captioner_path) if self.captioner_path else DEFAULT_CAPTIONER)


class ClassSource:
    """Where a run's classes come from: one of :class:`ClassList`, :class:`MaskTargetClasses`,
    :class:`GroundTruthClasses`, :class:`TaggerClasses`, :class:`CandidateClasses`, told
    apart by ``kind`` (the ``classes_from`` keyword). What a kind does not hold reads as
    empty: ``names`` (), ``gt_field`` and ``classes_field`` None."""

    kind: ClassVar[str] = None
    names = ()
    gt_field = None
    classes_field = None

    def keywords(self):
        """The flat keywords of this source (``classes_from`` and its own)."""
        return {"classes_from": self.kind,
                **{class_keyword(f): getattr(self, f.name) for f in dataclasses.fields(self)}}

    def _check_gt(self, required):
        _set(self, gt_field=self.gt_field or None)
        if required and not self.gt_field:
            raise ValueError("classes_from=%r needs gt_field=<a Segmentation field with mask_targets>" % self.kind)


def class_keyword(f):
    """The flat keyword of a class source's field (``names`` is ``classes``)."""
    return f.metadata.get("keyword", f.name)


_NAMES = dict(metadata={"keyword": "classes"})


@dataclass(frozen=True)
class ClassList(ClassSource):
    """The classes named, for every sample (``classes_from="list"``).

    Args:
        names: class names (at least one)
        gt_field (None): a ground truth Segmentation field whose pixel values the
            classes take when free (so masks and ground truth agree value by value)
    """

    kind: ClassVar[str] = "list"
    names: tuple = field(default=(), **_NAMES)
    gt_field: str = None

    def __post_init__(self):
        _set(self, names=_names(self.names, "classes"))
        if not self.names:
            raise ValueError("classes_from='list' needs classes=['cat', 'dog', ...]")
        self._check_gt(False)


@dataclass(frozen=True)
class MaskTargetClasses(ClassSource):
    """Every class of a ground truth field's ``mask_targets``, for every sample
    (``classes_from="mask_targets"``).

    Args:
        gt_field: the ground truth Segmentation field (with ``mask_targets``)
    """

    kind: ClassVar[str] = "mask_targets"
    gt_field: str = None

    def __post_init__(self):
        self._check_gt(True)


@dataclass(frozen=True)
class GroundTruthClasses(ClassSource):
    """Per sample, the classes present in its ground truth mask (``classes_from="gt_field"``,
    the paper's "Ground Truth" candidates).

    Args:
        gt_field: the ground truth Segmentation field (with ``mask_targets``)
    """

    kind: ClassVar[str] = "gt_field"
    gt_field: str = None

    def __post_init__(self):
        self._check_gt(True)


@dataclass(frozen=True)
class TaggerClasses(ClassSource):
    """Per sample, proposed by the BLIP captioner and the CLIP tagger over a vocabulary
    (``classes_from="tagger"``; the checkpoints are the :class:`ModelSpec`'s).

    Args:
        names (()): the vocabulary (empty: the ground truth's classes, else PASCAL VOC)
        gt_field (None): a ground truth field: its classes are the vocabulary when
            ``names`` is empty, and its pixel values are the classes' when free
    """

    kind: ClassVar[str] = "tagger"
    names: tuple = field(default=(), **_NAMES)
    gt_field: str = None

    def __post_init__(self):
        _set(self, names=_names(self.names, "classes"))
        self._check_gt(False)


@dataclass(frozen=True)
class CandidateClasses(ClassSource):
    """Per sample, the classes of a field of its own (``classes_from="candidates"``): a
    rerun's edited ``<label_field>_candidates``, or the paper's candidate files.

    Args:
        classes_field (None): each sample's classes (Classifications or a list of names;
            None: ``<label_field>_candidates``)
        gt_field (None): a ground truth field whose pixel values the classes take when free
    """

    kind: ClassVar[str] = "candidates"
    classes_field: str = None
    gt_field: str = None

    def __post_init__(self):
        _set(self, classes_field=self.classes_field or None)
        self._check_gt(False)


CLASS_SOURCES = {c.kind: c for c in (ClassList, MaskTargetClasses, GroundTruthClasses, TaggerClasses,
                                     CandidateClasses)}
NO_CLASSES = "no candidate classes: pass classes=[...] or classes_from=one of %s" % (tuple(CLASS_SOURCES),)
CLASS_KEYWORDS = ("classes_from",) + tuple(dict.fromkeys(
    class_keyword(f) for c in CLASS_SOURCES.values() for f in dataclasses.fields(c)))


def class_source(classes_from=None, strict=True, **given):
    """The :class:`ClassSource` of the flat keywords ``classes_from``, ``classes``,
    ``gt_field`` and ``classes_field`` (None when none is given: such settings build a
    config, and a run refuses them). ``classes_from`` defaults to ``"list"`` when
    ``classes`` are given. ``strict=False`` (form params, which keep values of inputs the
    form no longer shows) drops keywords the chosen kind does not use instead of refusing."""
    given = {k: v for k, v in given.items() if _is_given(v)}
    kind = classes_from or ("list" if given.get("classes") else None)
    if kind is None:
        if given and strict:
            raise ValueError(NO_CLASSES)
        return None
    source = CLASS_SOURCES.get(kind)
    if source is None:
        raise ValueError("unknown classes_from %r: choose one of %s" % (kind, tuple(CLASS_SOURCES)))
    takes = {class_keyword(f): f.name for f in dataclasses.fields(source)}
    unused = sorted(set(given) - set(takes))
    if unused and strict:
        raise ValueError("classes_from=%r does not use %s: it takes %s" % (kind, unused, sorted(takes)))
    return source(**{takes[k]: v for k, v in given.items() if k in takes})


def _is_given(value):
    return value is not None and not (isinstance(value, (str, list, tuple)) and not value)


@dataclass(frozen=True)
class PromptSpec:
    """Where each sample's caption (the prompt's first part) comes from.

    Args:
        caption_field (None): a string field holding each sample's caption
        use_captioner (False): caption images with BLIP (those without a caption in
            ``caption_field``); always on with :class:`TaggerClasses`
    """

    caption_field: str = None
    use_captioner: bool = False

    def __post_init__(self):
        _set(self, caption_field=self.caption_field or None, use_captioner=bool(self.use_captioner))


class Overrides(Mapping):
    """The :class:`faseg_core.FASegConfig` fields a run changes: an immutable
    ``{field: value}`` (None values dropped, lists made tuples) that equals the same dict.

    :meth:`apply` is the one place a config is built from overrides (runs through
    :func:`fiftyone_faseg.run.plan.run_config`, :class:`fiftyone_faseg.FASegModel`, the
    protocol harness).

    Args:
        values (None): a dict (or mapping) of FASegConfig fields

    Raises:
        TypeError: a key that is not a FASegConfig field
    """

    __slots__ = ("_values",)

    def __init__(self, values=None):
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(values or {}).items() if v is not None}
        unknown = sorted(set(values) - set(fa_seg_settings()))
        if unknown:
            raise TypeError("unknown FA-Seg settings %s: choose among the fields of faseg_core.FASegConfig %s"
                            % (unknown, list(fa_seg_settings())))
        if "batch_size" in values and (isinstance(values["batch_size"], bool)
                                       or int(values["batch_size"]) != values["batch_size"]):
            raise ValueError("`batch_size` must be an integer >= 1 but is %r." % (values["batch_size"],))
        if "threshold" in values:
            values["threshold"] = float(values["threshold"])
        self._values = values

    def __getitem__(self, name):
        return self._values[name]

    def __iter__(self):
        return iter(self._values)

    def __len__(self):
        return len(self._values)

    def __repr__(self):
        return "Overrides(%r)" % (self._values,)

    def __reduce__(self):
        return Overrides, (dict(self._values),)

    def apply(self, config=None, **changes):
        """``config`` (default: the paper's :class:`faseg_core.FASegConfig`) with these
        overrides and ``changes``; an image size moves the attention-grid weights with it."""
        from faseg_core.config import FASegConfig

        config = config or FASegConfig()
        changes = {**self._values, **changes}
        image_size = changes.pop("image_size", None)
        if image_size and int(image_size) != config.image_size:
            config = config.at_image_size(int(image_size))
        return config.replace(**changes) if changes else config


@dataclass(frozen=True)
class OutputSpec:
    """What a run writes, and where.

    Args:
        label_field ("faseg"): the Segmentation field to write (plus ``_candidates``,
            ``_caption``, ``_error`` and, when asked, ``_scores`` and ``_heatmap``)
        output_dir (None): write masks (and score maps, heatmaps) under this folder
        store_scores (False): keep each sample's refined score maps (float16 files)
        heatmap (False): store the top class's score as ``<label_field>_heatmap``
        keep_classes (None): only these classes' scores label pixels (the others become
            background or lose to the kept ones), as a re-threshold with ``classes``
            does; a rerun keeps its field's recorded subset
    """

    label_field: str = "faseg"
    output_dir: str = None
    store_scores: bool = False
    heatmap: bool = False
    keep_classes: tuple = None

    def __post_init__(self):
        keep = self.keep_classes
        if isinstance(keep, str):
            raise TypeError("`keep_classes` must be a list of names, not the string %r" % keep)
        _set(self, label_field=self.label_field or "faseg", output_dir=folder_param(self.output_dir),
             store_scores=bool(self.store_scores), heatmap=bool(self.heatmap),
             keep_classes=tuple(sorted({str(c) for c in keep})) if keep else None)

    @property
    def on_disk(self):
        """Whether the run writes files (masks under ``output_dir``, or score maps)."""
        return bool(self.output_dir or self.store_scores)


class WritePolicy(str, enum.Enum):
    """What a run does with labels its field already has on its samples (one value, so
    "skip them" and "overwrite them" cannot both be asked)."""

    NEW = "new"  #: refuse when any sample already has labels
    SKIP_EXISTING = "skip_existing"  #: process only samples without complete labels
    OVERWRITE = "overwrite"  #: replace existing labels

    @classmethod
    def of(cls, skip_existing=False, overwrite=False):
        """The policy of the flat ``skip_existing`` / ``overwrite`` keywords."""
        if skip_existing and overwrite:
            raise ValueError("skip_existing=True and overwrite=True ask for opposite things: choose one "
                             "(skip samples that have labels, or overwrite their labels)")
        return cls.OVERWRITE if overwrite else cls.SKIP_EXISTING if skip_existing else cls.NEW

    def keywords(self):
        return {"skip_existing": self is WritePolicy.SKIP_EXISTING, "overwrite": self is WritePolicy.OVERWRITE}


def fa_seg_settings():
    """Every knob of FA-Seg itself: the fields of :class:`faseg_core.FASegConfig`."""
    from faseg_core.config import FASegConfig

    return tuple(f.name for f in dataclasses.fields(FASegConfig))

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
"""

import dataclasses
import os
import uuid
from dataclasses import dataclass, field

from .constants import DEFAULT_CAPTIONER, DEFAULT_MODEL, DEFAULT_TAGGER

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
        threshold (None), batch_size (None), image_size (None), pamr (None): override
            the :class:`faseg_core.FASegConfig` (paper defaults)
        skip_existing (False): process only samples of the dataset without ``label_field``
        overwrite (False): replace existing labels of this run's field
        output_dir (None): write masks (and score maps, heatmaps) under this folder
        store_scores (False): keep each sample's refined score maps (float16 files)
        heatmap (False): store the top class's score as ``<label_field>_heatmap``
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
    threshold: float = None
    batch_size: int = None
    image_size: int = None
    pamr: bool = None
    skip_existing: bool = False
    overwrite: bool = False
    output_dir: str = None
    store_scores: bool = False
    heatmap: bool = False
    device: str = None
    dtype: str = None

    def __post_init__(self):
        # normalise what arrives from forms, JSON and keywords, so equal settings compare equal
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

    @classmethod
    def fields(cls):
        return [f.name for f in dataclasses.fields(cls)]

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
        tagger = params.get("tagger_model"), params.get("tagger_pretrained")
        if isinstance(tagger[0], str):
            kwargs["tagger_model"] = (tagger[0] or DEFAULT_TAGGER[0], tagger[1] or DEFAULT_TAGGER[1])
        return cls(**kwargs)

    def to_params(self):
        """JSON-ready parameters that :meth:`from_params` turns back into these settings."""
        params = dataclasses.asdict(self)
        params["classes"] = list(self.classes)
        params["tagger_model"], params["tagger_pretrained"] = self.tagger_model
        return params

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class RunRecord:
    """What a run recorded in its label field's ``info["faseg"]``.

    Args:
        threshold, image_size, model_path, pamr: how the masks were made
        output_dir, store_scores, heatmap: what was stored, and where
        root: the folder under which the run's files live (unique per dataset)
        source_field (None): the field a re-threshold read its scores from
        classes (None): the class subset a re-threshold kept
        revision: changes whenever a run, rerun or re-threshold writes the field
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
    classes: list = None
    revision: str = field(default_factory=lambda: uuid.uuid4().hex)

    @classmethod
    def read(cls, dataset, label_field):
        """The record of ``label_field`` (None when no FA-Seg run made it)."""
        fld = dataset.get_field(label_field)
        info = (fld.info or {}) if fld is not None else {}
        data = info.get(INFO_KEY)
        if not isinstance(data, dict):
            return None
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def write(self, dataset, label_field):
        """Store this record in ``label_field``'s info (the field must exist)."""
        fld = dataset.get_field(label_field)
        fld.info = {**(fld.info or {}), INFO_KEY: dataclasses.asdict(self)}
        fld.save()

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def new_revision(self):
        return dataclasses.replace(self, revision=uuid.uuid4().hex)

    CONSISTENT = ("threshold", "image_size", "model_path", "pamr", "store_scores")

    def differences(self, other):
        """``{setting: (this, other)}`` where masks made under ``other`` would not mean what
        masks made under this record do (or would lack what it promises, e.g. stored scores)."""
        return {k: (getattr(self, k), getattr(other, k)) for k in self.CONSISTENT
                if getattr(self, k) != getattr(other, k)}

"""FA-Seg as a FiftyOne :class:`fiftyone.core.models.Model`, for ``apply_model``."""

import dataclasses
import logging
import os

import fiftyone.core.config as foc
import fiftyone.core.labels as fol
import fiftyone.core.models as fom

from . import classes as fcl
from . import targets as ftg
from ..constants import DEFAULT_MODEL
from ..fields import MODEL_ATTR
from .models import load_segmenter
from .parts import Overrides, fa_seg_settings

logger = logging.getLogger(__name__)

# The model's own settings (a subset of RunSettings: which model, which classes, which field)
MODEL_SETTINGS = ("model_path", "device", "dtype", "classes", "classes_field", "caption_field", "label_field")


class FASegModelConfig(foc.Config):
    """Settings of :class:`FASegModel`, a FiftyOne model config (built from a dict, as
    ``fom.load_model({"type": "fiftyone_faseg.run.model.FASegModel", "config": {...}})`` and
    the model zoo do).

    Args:
        d: a dict with any of

            -   ``model_path``: a Hugging Face Hub id or a local SD-1.x folder
            -   ``classes``: class names for every image
            -   ``classes_field``: a sample field with per-image classes (a list of
                strings or :class:`fiftyone.core.labels.Classifications`), used when
                ``classes`` is empty
            -   ``caption_field``: a string field with each image's caption (None: the
                class prompt)
            -   ``label_field``: the field ``apply_model`` writes; then each class claims
                its pixel value in that field's ``mask_targets`` as runs do (existing
                classes keep theirs) and the model keeps them up to date
            -   ``device``, ``dtype``: where and how the model runs
            -   ``config``: a :class:`faseg_core.FASegConfig` (or its dict; default: the
                checkpoint's, the paper's values)
            -   any field of :class:`faseg_core.FASegConfig` (``threshold``,
                ``batch_size``, ``image_size``, ``pamr``, ``flip``, ...): overrides
                ``config`` (an image size moves the attention-grid weights with it)
    """

    def __init__(self, d):
        d = dict(d or {})
        unknown = sorted(set(d) - set(self.settings()))
        if unknown:
            raise TypeError("unknown FASegModel settings %s: choose among %s" % (unknown, list(self.settings())))
        self.model_path = os.fspath(d.get("model_path") or DEFAULT_MODEL)
        self.classes = list(self.parse_raw(d, "classes", default=None) or [])
        for name in ("classes_field", "caption_field", "label_field", "device"):
            setattr(self, name, self.parse_raw(d, name, default=None) or None)
        config = self.parse_raw(d, "config", default=None)
        if isinstance(config, dict):
            from faseg_core.config import FASegConfig

            config = FASegConfig(**config)
        self.config = config
        for name in fa_seg_settings():
            setattr(self, name, self.parse_raw(d, name, default=None))
        self.run_config(self.config)  # a bad override fails here, not at the first batch

    @classmethod
    def settings(cls):
        """Every keyword this config takes."""
        return MODEL_SETTINGS + ("config",) + tuple(n for n in fa_seg_settings() if n not in MODEL_SETTINGS)

    def overrides(self):
        """``{FASegConfig field: value}`` of the knobs this config sets."""
        return {n: getattr(self, n) for n in fa_seg_settings() if getattr(self, n) is not None}

    def run_config(self, base=None):
        """The :class:`faseg_core.FASegConfig` of this model's calls: ``self.config`` (else
        ``base``, else the paper's) with the overrides, applied as a run applies them
        (:meth:`fiftyone_faseg.run.settings.Overrides.apply`)."""
        return Overrides(self.overrides()).apply(self.config or base)

    def attributes(self):
        return [a for a in self.settings() if a != "config"] + ["config"]

    def serialize(self, reflective=False):
        d = super().serialize(reflective=reflective)
        if self.config is not None:
            d["config"] = dataclasses.asdict(self.config)
        return d


class FASegModel(fom.Model, fom.SamplesMixin):
    """FA-Seg for :meth:`apply_model() <fiftyone.core.collections.SampleCollection.apply_model>`.

    Example usage::

        from fiftyone_faseg import FASegModel

        model = FASegModel(classes=["cat", "dog"], label_field="faseg", pamr=True)
        dataset.apply_model(model, label_field="faseg", batch_size=4)
        dataset.mask_targets["faseg"]  # the model claimed its classes' values there

    With ``label_field`` (the field ``apply_model`` writes), each class claims its pixel
    value in that field's ``mask_targets`` before any mask is written, as
    :func:`fiftyone_faseg.segment_samples` does: classes already there keep their value,
    so labels of samples this call does not touch keep their meaning, and
    ``model.mask_targets`` is the field's whole ``mask_targets``. Without it, values are
    numbered from 1 for the model's lifetime (for a new field).

    Args:
        config (None): a :class:`FASegModelConfig` (or its dict), or pass its settings as
            keywords (then ``config`` may be a :class:`faseg_core.FASegConfig`)
    """

    def __init__(self, config=None, **kwargs):
        fom.SamplesMixin.__init__(self)
        # FiftyOne models take one config; FASegModel(classes=..., config=FASegConfig(...)) works too
        if isinstance(config, FASegModelConfig):
            self.config = config
        elif isinstance(config, dict) and not kwargs:
            self.config = FASegModelConfig(config)
        else:
            self.config = FASegModelConfig(dict(kwargs, config=config))
        if not self.config.classes and not self.config.classes_field:
            raise ValueError("FASegModel needs classes=[...] or classes_field=<a field with each image's classes>")
        self._class_ids = fcl.assign_ids(self._fixed_classes())
        self._segmenter = None
        self._config = None
        self._preprocess = False
        self._warned_no_field = False
        self._own_fields = {
            k: f for k, f in (("classes", self.config.classes_field), ("caption", self.config.caption_field)) if f
        }
        self.needs_fields = {}

    def _fixed_classes(self):
        from faseg_core.tokens import clean_classes

        return clean_classes(self.config.classes or [])

    @property
    def needs_fields(self):
        return self._fields

    @needs_fields.setter
    def needs_fields(self, fields):
        # apply_model sets this from its keyword arguments; keep the fields we need
        self._fields = {**self._own_fields, **(fields or {})}

    @property
    def media_type(self):
        return "image"

    @property
    def ragged_batches(self):
        return False  # predict_all takes a list of differently sized images

    @property
    def transforms(self):
        return None

    @property
    def preprocess(self):
        return self._preprocess

    @preprocess.setter
    def preprocess(self, value):
        self._preprocess = value

    @property
    def has_logits(self):
        return False

    @property
    def mask_targets(self):
        """``{pixel value: class name}``: with ``label_field``, the field's mask_targets as
        stored after this model's last claim; else every class this model has used."""
        return {v: n for n, v in sorted(self._class_ids.items(), key=lambda kv: kv[1])}

    @property
    def segmenter(self):
        """The loaded :class:`faseg_core.FASeg` (cached per checkpoint, device and dtype)."""
        if self._segmenter is None:
            self._segmenter = load_segmenter(self.config.model_path, self.config.device, self.config.dtype)
        return self._segmenter

    @property
    def run_config(self):
        """The :class:`faseg_core.FASegConfig` every call of this model uses (the segmenter's is never changed)."""
        if self.config.config is None and not self.config.overrides():
            return self.segmenter.config
        return self.config.run_config(None if self.config.config is not None else self.segmenter.config)

    def __enter__(self):
        self._config = self.run_config
        return self

    def __exit__(self, *args):
        self._config = None

    def predict(self, arg, sample=None):
        return self.predict_all([arg], samples=None if sample is None else [sample])[0]

    def predict_all(self, args, samples=None):
        images = list(args)
        classes = [self._classes_of(s) for s in (samples or [None] * len(images))]
        captions = [self._caption_of(s) for s in (samples or [None] * len(images))]
        results = self.segmenter(images, classes, captions, config=self._config or self.run_config)
        self._claim([n for r in results for n in r.classes], samples)
        # each label says FA-Seg made it (apply_model's field carries no FA-Seg info): never offered as ground truth
        return [fol.Segmentation(mask=fcl.to_mask(r.label_map, r.classes, self._class_ids),
                                 **{MODEL_ATTR: self.config.model_path}) for r in results]

    def _claim(self, names, samples):
        """Gives each class name its pixel value: claimed in ``label_field``'s stored
        mask_targets (atomic, as runs claim them) when the model knows the field and the
        samples' dataset, else numbered on from the model's own."""
        dataset = next((s.dataset for s in samples or () if getattr(s, "dataset", None) is not None), None)
        if self.config.label_field and dataset is not None:
            ftg.claim_values(dataset, self.config.label_field, list(dict.fromkeys(names)))
            stored = ftg.read_targets(dataset, self.config.label_field)
            self._class_ids = {n: v for v, n in stored.items() if v != 0}
        else:
            if dataset is not None and not self._warned_no_field:
                self._warned_no_field = True
                logger.warning(
                    "FASegModel numbers classes from 1 because it does not know the field it writes: pass "
                    "FASegModel(..., label_field=<the apply_model field>) so classes keep the values of that "
                    "field's mask_targets; before `dataset.mask_targets[field] = model.mask_targets`, check that "
                    "the field had no other labels")
            self._class_ids = fcl.assign_ids(names, self.mask_targets)

    def _classes_of(self, sample):
        fixed = self._fixed_classes()
        if fixed or sample is None:
            return fixed
        value = sample[self.needs_fields["classes"]]
        if isinstance(value, fol.Classifications):
            return [c.label for c in value.classifications]
        return list(value or [])

    def _caption_of(self, sample):
        field_name = self.needs_fields.get("caption")
        return sample[field_name] if sample is not None and field_name else None

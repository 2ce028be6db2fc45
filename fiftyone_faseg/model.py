"""FA-Seg as a FiftyOne :class:`fiftyone.core.models.Model`, for ``apply_model``."""

from dataclasses import dataclass, field

import fiftyone.core.labels as fol
import fiftyone.core.models as fom

from . import classes as fcl
from .constants import DEFAULT_MODEL
from .models import load_segmenter


@dataclass
class FASegModelConfig:
    """Settings of :class:`FASegModel`.

    Args:
        model_path: a Hugging Face Hub id or a local SD-1.x folder
        classes: class names for every image
        classes_field: a sample field with per-image classes (a list of strings or
            :class:`fiftyone.core.labels.Classifications`), used when ``classes`` is empty
        caption_field: a string field with each image's caption (None: the class prompt)
        config: a :class:`faseg_core.FASegConfig` (paper defaults)
        threshold, batch_size: override ``config``
        device, dtype: where and how the model runs
    """

    model_path: str = DEFAULT_MODEL
    classes: list = field(default_factory=list)
    classes_field: str = None
    caption_field: str = None
    config: object = None
    threshold: float = None
    batch_size: int = None
    device: str = None
    dtype: object = None


class FASegModel(fom.Model, fom.SamplesMixin):
    """FA-Seg for :meth:`apply_model() <fiftyone.core.collections.SampleCollection.apply_model>`.

    Example usage::

        from fiftyone_faseg import FASegModel

        model = FASegModel(model_path="XCLiu/2_rectified_flow_from_sd_1_5", classes=["cat", "dog"])
        dataset.apply_model(model, label_field="faseg", batch_size=4)
        dataset.mask_targets["faseg"] = model.mask_targets  # apply_model never sets them
        dataset.save()

    Pixel values are one per class name for the model's lifetime (``model.mask_targets``);
    :func:`fiftyone_faseg.segment_samples` does the same and also stores candidates,
    captions, per-sample errors and the dataset's ``mask_targets``.

    Args:
        config (None): a :class:`FASegModelConfig`, or pass its fields as keywords (then
            ``config`` may be a :class:`faseg_core.FASegConfig`)
    """

    def __init__(self, config=None, **kwargs):
        fom.SamplesMixin.__init__(self)
        # FiftyOne models take one config; FASegModel(classes=..., config=FASegConfig(...)) works too
        self.config = config if isinstance(config, FASegModelConfig) else FASegModelConfig(config=config, **kwargs)
        self._class_ids = fcl.assign_ids(self._fixed_classes())
        self._segmenter = None
        self._config = None
        self._preprocess = False
        self._own_fields = {
            k: f for k, f in (("classes", self.config.classes_field), ("caption", self.config.caption_field)) if f
        }
        self.needs_fields = {}
        if not self.config.classes and not self.config.classes_field:
            raise ValueError("FASegModel needs classes=[...] or classes_field=<a field with each image's classes>")

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
        """``{pixel value: class name}`` of every class this model has used."""
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
        changes = {k: getattr(self.config, k) for k in ("threshold", "batch_size") if getattr(self.config, k) is not None}
        base = self.config.config or self.segmenter.config
        return base.replace(**changes) if changes else base

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
        for result in results:
            self._class_ids = fcl.assign_ids(result.classes, self.mask_targets)
        return [fol.Segmentation(mask=fcl.to_mask(r.label_map, r.classes, self._class_ids)) for r in results]

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

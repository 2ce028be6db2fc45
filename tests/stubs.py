"""A stand-in for :class:`faseg_core.FASeg` in tests where the model is not under test.

:class:`StubSegmenter` has FASeg's call interface (``seg(images, classes, captions,
config=...)`` -> one result per image with FASegResult's ``label_map``, ``scores``,
``classes`` and ``prompt``), its ``config`` and a real CLIP ``tokenizer`` (class names
are checked against prompts as with FASeg), and returns deterministic results in no
time: each class's score map is a smooth function of the image's colours at the latent
grid (``image_size // 8``) and of the class name, and the label map is made from the
scores by ``faseg_core.labels_from_scores``, as stored scores are re-thresholded. Equal
inputs give equal results in any process. It imports neither diffusers nor a model
(a subprocess using it starts in seconds).
"""

import zlib
from dataclasses import dataclass

import numpy as np


@dataclass
class StubResult:
    """What :class:`faseg_core.pipeline.FASegResult` holds."""

    label_map: np.ndarray
    scores: np.ndarray
    classes: list
    prompt: str = ""


class StubSegmenter:
    """FASeg's call interface, deterministic results, no UNet.

    Args:
        tokenizer: a CLIP tokenizer (``tokenizer/`` of a checkpoint)
        config: the :class:`faseg_core.FASegConfig` used when a call passes none
    """

    def __init__(self, tokenizer, config):
        self.tokenizer, self.config = tokenizer, config

    @classmethod
    def from_checkpoint(cls, path, config):
        """The stub with the tokenizer of the SD-1.x checkpoint folder ``path``."""
        from transformers import CLIPTokenizer

        return cls(CLIPTokenizer.from_pretrained(str(path), subfolder="tokenizer"), config)

    def __call__(self, images, classes, captions=None, config=None, progress=False):
        from faseg_core import labels_from_scores
        from faseg_core.images import as_image_list, load_image
        from faseg_core.tokens import clean_classes

        cfg = config or self.config
        images = [load_image(image, i) for i, image in enumerate(as_image_list(images))]
        classes = list(classes)
        lists = [clean_classes(c) for c in classes] if classes and isinstance(classes[0], (list, tuple)) \
            else [clean_classes(classes)] * len(images)
        captions = [captions] * len(images) if captions is None or isinstance(captions, str) else list(captions)
        if len(lists) != len(images) or len(captions) != len(images) or not all(lists):
            raise ValueError("one non-empty class list and one caption per image, or one for all")
        results = []
        for image, names, caption in zip(images, lists, captions):
            scores = class_scores(image, names, cfg.image_size // 8)
            labels = labels_from_scores(scores, cfg.threshold, cfg.image_size, image.width, image.height)
            prompt = "%s ; %s" % (caption, " ".join(names)) if caption else " ".join(names)
            results.append(StubResult(labels, scores, list(names), prompt))
        return results


def class_scores(image, names, side):
    """``(K, side, side)`` float32 scores in [0, 1]: for each class, a mix of the image's
    colour channels (weights from a hash of the name) through a sigmoid."""
    from PIL import Image

    rgb = np.asarray(image.convert("RGB").resize((side, side), Image.BILINEAR), np.float32) / 255.0
    maps = []
    for name in names:
        rng = np.random.RandomState(zlib.crc32(name.encode("utf-8")))
        weights, bias = rng.uniform(-4, 4, 3).astype(np.float32), np.float32(rng.uniform(-1, 1))
        maps.append(1.0 / (1.0 + np.exp(-(rgb @ weights + bias))))
    return np.stack(maps).astype(np.float32)

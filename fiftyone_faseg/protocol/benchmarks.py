"""The three benchmarks of the FA-Seg paper, as data: classes, preset, ground truth mapping.

Every benchmark is imported with **index 0 = background** and the vocabulary's canonical
class names at 1..K, so ``dataset.mask_targets["ground_truth"]`` has 21 (VOC), 60
(PASCAL Context) or 81 (COCO Object) entries; 255 is void and ignored by the mIoU.

Ground truth conventions (what the label files on disk hold):

-   **PASCAL VOC 2012**: ``SegmentationClass/*.png`` are palette PNGs whose pixel
    *index* is the class (0 background, 1..20, 255 void). They are read as indices
    with PIL (OpenCV, which FiftyOne uses to read ``mask_path``, would expand the
    palette to BGR colours), so the importer writes single-channel copies.
-   **PASCAL Context (59 + background)**: the 59-class label files of segmentation
    toolkits (MMSegmentation's ``pascal_context`` layout, made by its
    ``tools/dataset_converters/pascal_context.py``): ``SegmentationClassContext/*.png``
    with 0 = background and 1..59 the classes in the order of
    ``Vocabulary.context()``. MMSegmentation's ``PascalContextDataset59`` loads them
    with ``reduce_zero_label=True`` (0 becomes 255 and is *ignored*; 1..59 become
    0..58): a 59-class mIoU without background. Its ``PascalContextDataset`` keeps 0
    as background (60 classes). FA-Seg predicts background with its threshold, so the
    paper's protocol is the 60-class one: the values are used as they are.
-   **COCO Object (80 things + background)**, from COCO-Stuff-164k:
    ``stuffthingmaps_trainval2017/val2017/*.png`` hold ``COCO category id - 1``
    (things: the 80 ids in 1..90, so values 0..89 with gaps; stuff: 91..181;
    255 unlabeled). MMSegmentation's converted ``*_labelTrainIds.png`` hold
    contiguous train ids instead (things 0..79, stuff 80..170, 255). Either way a
    thing becomes 1 + its index among the 80 things, stuff becomes background (0)
    and 255 stays ignored.
"""

from dataclasses import dataclass

import numpy as np

BACKGROUND = "background"
IGNORE = 255
PAPER_THRESHOLDS = (0.40, 0.45, 0.50, 0.55, 0.60, 0.65)  # the sweep of the paper's Table 4

# The 80 COCO thing category ids, in category order (the order of Vocabulary.coco_object())
COCO_THING_IDS = (
    list(range(1, 12)) + list(range(13, 26)) + [27, 28] + list(range(31, 45))
    + list(range(46, 66)) + [67, 70] + list(range(72, 83)) + list(range(84, 91))
)


@dataclass(frozen=True)
class Benchmark:
    """One benchmark of the paper.

    Attributes:
        key: ``"voc"``, ``"context"`` or ``"coco_object"`` (the key of
            :data:`faseg_core.THRESHOLDS` and of the built-in vocabularies)
        title: the name used in tables
        split: the default split
        paper_miou: the paper's mIoU (%) with its TagCLIP+BLIP candidates and with
            the ground truth class lists
    """

    key: str
    title: str
    split: str
    paper_miou: tuple

    def vocabulary(self):
        """The benchmark's :class:`faseg_core.candidates.Vocabulary` (no background)."""
        from faseg_core.candidates import Vocabulary

        return Vocabulary.builtin(self.key)

    def class_names(self):
        """``["background", class 1, ...]``: the name of each ground truth index."""
        return [BACKGROUND] + list(self.vocabulary().names)

    def mask_targets(self):
        """``{index: name}`` of the ground truth field."""
        return dict(enumerate(self.class_names()))

    @property
    def threshold(self):
        """The paper's background threshold for this benchmark."""
        from faseg_core import THRESHOLDS

        return THRESHOLDS[self.key]


BENCHMARKS = {
    "voc": Benchmark("voc", "PASCAL VOC 2012 val", "val", (64.0, 69.7)),
    "context": Benchmark("context", "PASCAL Context val (59 + background)", "val", (31.3, 45.1)),
    "coco_object": Benchmark("coco_object", "COCO Object val2017", "val2017", (36.2, 38.8)),
}
ALIASES = {"coco": "coco_object", "pascal_voc": "voc", "pascal_context": "context"}


def get_benchmark(name):
    """The :class:`Benchmark` called ``name`` (``"voc"``, ``"context"``, ``"coco_object"``/``"coco"``)."""
    key = ALIASES.get(name, name)
    if key not in BENCHMARKS:
        raise ValueError(
            "unknown benchmark %r: choose one of %s" % (name, sorted(set(BENCHMARKS) | set(ALIASES)))
        )
    return BENCHMARKS[key]


def coco_lut(train_ids):
    """A 256-entry lookup table from COCO-Stuff label values to COCO Object indices.

    Args:
        train_ids: True for MMSegmentation's contiguous ``*_labelTrainIds.png``
            (things 0..79), False for the raw ``stuffthingmaps`` (category id - 1)

    Returns:
        a ``(256,)`` uint8 array: things → 1..80, stuff → 0, 255 → 255
    """
    lut = np.zeros(256, dtype=np.uint8)
    lut[IGNORE] = IGNORE
    for k, cat_id in enumerate(COCO_THING_IDS):
        lut[k if train_ids else cat_id - 1] = k + 1
    return lut

"""Importing a benchmark's images and ground truth into a persistent FiftyOne dataset.

Each sample gets ``filepath``, ``image_id`` (the benchmark's id, e.g. ``2007_000033``)
and ``ground_truth``, a :class:`fiftyone.core.labels.Segmentation` whose ``mask_path``
is a single-channel PNG of ground truth indices (0 background, 1..K, 255 void) written
under ``<output_dir>/gt/`` (see :mod:`fiftyone_faseg.protocol.benchmarks` for each
benchmark's conversion). ``dataset.mask_targets["ground_truth"]`` names the indices.

Importing is idempotent: rerunning adds only the ids that are not in the dataset yet
(e.g. after raising ``limit``), and converted masks that exist are not rewritten.
"""

import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image

import fiftyone as fo

from ..run import storage
from .benchmarks import coco_lut, get_benchmark

logger = logging.getLogger(__name__)

GT_FIELD = "ground_truth"
ID_FIELD = "image_id"
INFO_KEY = "faseg_protocol"


class Layout(object):
    """Where a benchmark's files are: ``ids``, and for each id its image and label file.

    Args:
        images_dir: the folder of ``<id><image_ext>`` images
        labels_dir: the folder of ``<id><label_suffix>`` label PNGs
        ids: the image ids, in split order
        image_ext (".jpg"), label_suffix (".png")
        convert (None): ``callable(array) -> array`` applied to the label indices
    """

    def __init__(self, images_dir, labels_dir, ids, image_ext=".jpg", label_suffix=".png", convert=None):
        self.images_dir = Path(images_dir)
        self.labels_dir = Path(labels_dir)
        self.ids = list(ids)
        self.image_ext = image_ext
        self.label_suffix = label_suffix
        self.convert = convert

    def image_path(self, image_id):
        return self.images_dir / (image_id + self.image_ext)

    def label_path(self, image_id):
        return self.labels_dir / (image_id + self.label_suffix)


def _require(root, parts, what):
    missing = [p for p in parts if not (Path(root) / p).exists()]
    if missing:
        raise FileNotFoundError(
            "'%s' is not a %s folder: it lacks %s. Pass the folder that holds %s"
            % (root, what, ", ".join(missing), ", ".join(parts))
        )


def _read_ids(path):
    with open(path, encoding="utf-8") as f:
        ids = [line.split()[0] for line in f if line.strip()]
    if not ids:
        raise ValueError("split file '%s' lists no image ids" % path)
    return ids


def _pascal_layout(root, split, labels, split_dir, what):
    root = Path(root)
    split_file = "ImageSets/%s/%s.txt" % (split_dir, split)
    _require(root, ["JPEGImages/", labels + "/", split_file], what)
    return Layout(root / "JPEGImages", root / labels, _read_ids(root / split_file))


def voc_layout(root, split="val"):
    """The :class:`Layout` of a ``VOCdevkit/VOC2012`` folder (``JPEGImages``,
    ``SegmentationClass``, ``ImageSets/Segmentation/<split>.txt``)."""
    return _pascal_layout(root, split, "SegmentationClass", "Segmentation", "PASCAL VOC")


def context_layout(root, split="val"):
    """The :class:`Layout` of MMSegmentation's PASCAL Context folder (``JPEGImages``,
    ``SegmentationClassContext``, ``ImageSets/SegmentationContext/<split>.txt``)."""
    return _pascal_layout(root, split, "SegmentationClassContext", "SegmentationContext", "PASCAL Context")


COCO_IMAGE_DIRS = ("images/{split}", "{split}")
COCO_LABEL_DIRS = ("stuffthingmaps_trainval2017/{split}", "annotations/{split}", "stuffthingmaps/{split}")


def coco_layout(root, split="val2017"):
    """The :class:`Layout` of a COCO-Stuff-164k folder.

    Images in ``images/<split>/`` or ``<split>/``; labels in
    ``stuffthingmaps_trainval2017/<split>/``, ``annotations/<split>/`` or
    ``stuffthingmaps/<split>/``, either raw (``<id>.png``) or converted by
    MMSegmentation (``<id>_labelTrainIds.png``). Ids are the images that have labels.
    """
    root = Path(root)
    image_dirs = [root / d.format(split=split) for d in COCO_IMAGE_DIRS]
    label_dirs = [root / d.format(split=split) for d in COCO_LABEL_DIRS]
    images = next((d for d in image_dirs if d.is_dir()), None)
    labels = next((d for d in label_dirs if d.is_dir()), None)
    if images is None or labels is None:
        raise FileNotFoundError(
            "'%s' is not a COCO-Stuff folder: it lacks %s. Pass the folder that holds "
            "images/%s/ (or %s/) and stuffthingmaps_trainval2017/%s/ (or annotations/%s/)"
            % (root, "an image folder" if images is None else "a label folder", split, split, split, split)
        )
    train_ids = any(labels.glob("*_labelTrainIds.png"))
    suffix = "_labelTrainIds.png" if train_ids else ".png"
    ids = sorted(
        p.name[: -len(suffix)] for p in labels.iterdir()
        if p.name.endswith(suffix) and (train_ids or not p.name.endswith("_labelTrainIds.png"))
    )
    ids = [i for i in ids if (images / (i + ".jpg")).is_file()]
    if not ids:
        raise FileNotFoundError("no image of '%s' has a label file in '%s'" % (images, labels))
    lut = coco_lut(train_ids)
    return Layout(images, labels, ids, label_suffix=suffix, convert=lambda a: lut[a])


LAYOUTS = {"voc": voc_layout, "context": context_layout, "coco_object": coco_layout}


def find_layout(benchmark, root, split=None):
    """The :class:`Layout` of ``root`` for a benchmark name."""
    bench = get_benchmark(benchmark)
    if not Path(root).is_dir():
        raise FileNotFoundError("dataset folder '%s' does not exist" % root)
    return LAYOUTS[bench.key](root, split or bench.split)


def read_label_indices(path):
    """A label PNG as a 2D array of indices (palette PNGs give their indices, not colours)."""
    with Image.open(path) as image:
        if image.mode not in ("P", "L", "I", "I;16"):
            raise ValueError(
                "label file '%s' is a %s image: expected class indices (a palette or "
                "grayscale PNG), not colours" % (path, image.mode)
            )
        return np.array(image)


def convert_label(layout, image_id, out_path):
    """Writes the ground truth indices of ``image_id`` to ``out_path`` (once)."""
    if os.path.isfile(out_path):
        return out_path
    labels = read_label_indices(layout.label_path(image_id))
    if layout.convert is not None:
        labels = layout.convert(labels)
    return storage.write_mask(out_path, labels.astype(np.uint8))


def import_benchmark(benchmark, root, dataset_name=None, output_dir="faseg-protocol", split=None,
                     limit=None, progress=None):
    """Imports a benchmark into a persistent dataset, or completes an earlier import.

    Example usage::

        from fiftyone_faseg.protocol import import_benchmark

        dataset, ids = import_benchmark("voc", "/data/VOCdevkit/VOC2012", limit=100)
        view = dataset.select_by("image_id", ids, ordered=True)

    Args:
        benchmark: ``"voc"``, ``"context"`` or ``"coco_object"``
        root: the benchmark's folder (see :func:`find_layout`)
        dataset_name (None): defaults to ``faseg-protocol-<benchmark>-<split>``
        output_dir ("faseg-protocol"): converted masks go to ``<output_dir>/gt/``
        split (None): the split (default: the benchmark's evaluation split)
        limit (None): import only the first ``limit`` ids of the split
        progress (None): a FiftyOne progress setting

    Returns:
        ``(dataset, ids)``: the dataset and the ids of this import, in split order
    """
    bench = get_benchmark(benchmark)
    split = split or bench.split
    layout = find_layout(bench.key, root, split)
    ids = layout.ids[:limit] if limit else layout.ids
    name = dataset_name or "faseg-protocol-%s-%s" % (bench.key.replace("_", "-"), split)
    root = os.path.abspath(root)

    if fo.dataset_exists(name):
        dataset = fo.load_dataset(name)
        info = dataset.info.get(INFO_KEY, {})
        if info and (info.get("benchmark"), info.get("root")) != (bench.key, root):
            raise ValueError(
                "dataset '%s' holds %s from '%s', not %s from '%s': pass another "
                "--dataset-name, or delete it with fo.delete_dataset('%s')"
                % (name, info.get("benchmark"), info.get("root"), bench.key, root, name)
            )
    else:
        dataset = fo.Dataset(name, persistent=True)
        logger.info("Created dataset '%s'", name)

    have = set(dataset.values(ID_FIELD)) if dataset.has_sample_field(ID_FIELD) else set()
    new = [i for i in ids if i not in have]
    gt_dir = os.path.join(os.path.abspath(output_dir), "gt", "%s-%s" % (bench.key, split))
    samples = []
    for image_id in new:
        image = layout.image_path(image_id)
        if not image.is_file():
            raise FileNotFoundError("image '%s' of id '%s' does not exist" % (image, image_id))
        mask = convert_label(layout, image_id, os.path.join(gt_dir, image_id + ".png"))
        samples.append(fo.Sample(filepath=str(image), **{ID_FIELD: image_id, GT_FIELD: fo.Segmentation(mask_path=mask)}))
    if samples:
        dataset.add_samples(samples, progress=progress)
        logger.info("Imported %d samples into '%s' (%d already there)", len(samples), name, len(ids) - len(new))
    dataset.exists("metadata", False).compute_metadata(progress=progress)

    targets = bench.mask_targets()
    if dataset.mask_targets.get(GT_FIELD) != targets or not dataset.info.get(INFO_KEY):
        dataset.mask_targets = {**dataset.mask_targets, GT_FIELD: targets}
        dataset.info = {**dataset.info, INFO_KEY: {"benchmark": bench.key, "root": root, "split": split}}
        dataset.save()
    return dataset, ids

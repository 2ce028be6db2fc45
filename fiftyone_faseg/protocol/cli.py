"""``python -m fiftyone_faseg.protocol``: reproduce the FA-Seg paper's table on one benchmark.

Example::

    python -m fiftyone_faseg.protocol voc --root /data/VOCdevkit/VOC2012 \\
        --candidates faseg-protocol/candidate_classes_voc.json \\
        --captions faseg-protocol/caption_voc_blip1.json --output-dir runs/voc
"""

import argparse
import logging
import os
import sys

from ..run.settings import add_flags, scalar_config_fields
from .benchmarks import ALIASES, BENCHMARKS, PAPER_THRESHOLDS
from .segment import CLASS_SOURCES

# help of the FASegConfig flags that have one (the others are named by their field)
CONFIG_HELP = {
    "threshold": "background threshold (default: the benchmark's)",
    "image_size": "model image size (default 512; tests use 128)",
}

EPILOG = """\
The dataset is imported once into a persistent FiftyOne dataset and reused; a run that
stops continues where it stopped when the same command is run again (images that have a
mask are skipped), and a run with nothing left to segment only re-evaluates (no model is
loaded). Outputs under --output-dir: gt/ (ground truth indices), <label-field>/ (masks),
<label-field>_scores/ (float16 score maps), results/<dataset>-<label-field>.json and .md.
The 2-RF model's license is CC-BY-NC-4.0 (non-commercial).
"""


def build_parser():
    p = argparse.ArgumentParser(prog="python -m fiftyone_faseg.protocol", description=__doc__.split("\n")[0],
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("benchmark", choices=sorted(set(BENCHMARKS) | set(ALIASES)))
    p.add_argument("--root", required=True,
                   help="VOCdevkit/VOC2012, the PASCAL Context folder (MMSegmentation layout), or COCO-Stuff-164k")
    p.add_argument("--classes-from", choices=CLASS_SOURCES, default=None,
                   help="candidate classes: the paper's JSON (default when --candidates is given), "
                        "the ground truth (the paper's 'Ground Truth' row; default otherwise) or our tagger")
    p.add_argument("--candidates", help="candidate_classes_{voc,context,coco}.json of the paper")
    p.add_argument("--captions", help="caption_{voc,context,coco}_blip1.json of the paper")
    p.add_argument("--model", default=None, help="Hub id or SD-1.x folder (default: XCLiu/2_rectified_flow_from_sd_1_5)")
    p.add_argument("--captioner", default=None, help="BLIP Hub id or folder for --classes-from tagger")
    p.add_argument("--tagger", nargs="+", default=None, metavar=("MODEL", "PRETRAINED"),
                   help="open_clip model name or folder [and pretrained tag or file] for --classes-from tagger")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    p.add_argument("--dtype", default=None, choices=["auto", "float32", "float16", "bfloat16"])
    p.add_argument("--sweep", type=float, nargs="*", default=list(PAPER_THRESHOLDS),
                   help="thresholds whose mIoU is computed from the stored scores (default: 0.40 … 0.65)")
    p.add_argument("--output-dir", default="faseg-protocol-runs")
    p.add_argument("--dataset-name", default=None)
    p.add_argument("--label-field", default=None, help="default faseg_<classes-from>")
    p.add_argument("--split", default=None)
    p.add_argument("--limit", type=int, default=None, help="only the first N images of the split")
    p.add_argument("--overwrite", action="store_true", help="segment every image again")
    p.add_argument("--no-fiftyone-eval", action="store_true", help="skip storing a FiftyOne evaluation run")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    add_flags(p.add_argument_group("FA-Seg settings (faseg_core.FASegConfig; default: the benchmark's)"),
              config_flags(), help=CONFIG_HELP)
    return p


def config_flags():
    """``{name: type}`` of the FASegConfig fields that are flags (every scalar one but ``dtype``,
    which ``--dtype`` sets for the model)."""
    return scalar_config_fields(skip=("dtype",))


def main(argv=None):
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from .harness import run_protocol
    from .report import to_markdown, write_report

    classes_from = args.classes_from or ("json" if args.candidates else "gt")
    overrides = {k: getattr(args, k) for k in config_flags() if getattr(args, k) is not None}
    try:
        report = run_protocol(
            args.benchmark, args.root, classes_from=classes_from, candidates=args.candidates,
            captions=args.captions, model_path=args.model, device=args.device, dtype=args.dtype,
            output_dir=args.output_dir, dataset_name=args.dataset_name, label_field=args.label_field,
            limit=args.limit, split=args.split, thresholds=args.sweep, overwrite=args.overwrite,
            progress=not args.no_progress, evaluate=not args.no_fiftyone_eval,
            captioner_path=args.captioner,
            tagger_model=(args.tagger[0], args.tagger[1] if len(args.tagger) > 1 else None) if args.tagger else None,
            **overrides,
        )
    except (FileNotFoundError, ValueError) as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    path = write_report(report, os.path.join(os.path.abspath(args.output_dir), "results"))
    print(to_markdown(report))
    print("\nreport: %s" % path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

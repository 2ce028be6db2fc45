"""A FiftyOne run end to end: `segment_samples` against FiftyOne's own `apply_model` loop.

Both run the same tiny model (128 px) over the same images; the model time is measured
inside the segmenter, so what is left is reading images and storing results in FiftyOne
(masks in the database, or PNGs under `output_dir`, plus candidates, captions, errors).

    python -m benchmarks.bench_run [--quick] [--out DIR]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path


from . import common

NAME = "run"
CLASSES = ["cat", "dog", "bird"]


def main(argv=None) -> dict:
    args = common.parser(__doc__.split("\n")[0]).parse_args(argv)
    import fiftyone as fo

    import fiftyone_faseg as ff
    from faseg_core import FASeg, FASegConfig
    from faseg_core.testing import save_diffusion_checkpoint
    from fiftyone_faseg.protocol.harness import TimedSegmenter

    count = 8 if args.quick else 64
    config = FASegConfig(batch_size=8).at_image_size(128)
    rows, report = [], {"machine": common.machine(), "images": count, "image_size": 128}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        checkpoint = save_diffusion_checkpoint(folder / "tiny")
        paths = common.random_jpegs(folder, count)
        seg = TimedSegmenter(FASeg.from_pretrained(checkpoint, config=config, device="cpu"))
        seg(paths[:1], CLASSES)  # warm-up
        variants = {
            "segment_samples, masks in the database": lambda ds: ff.segment_samples(ds, classes=CLASSES, segmenter=seg),
            "segment_samples, masks as PNGs": lambda ds: ff.segment_samples(
                ds, classes=CLASSES, segmenter=seg, output_dir=str(folder / "masks")),
            "apply_model (FiftyOne's loop), baseline": lambda ds: ds.apply_model(
                _model(ff, checkpoint, config, seg), label_field="faseg", batch_size=8),
        }
        for name, run in variants.items():
            ds = fo.Dataset()
            ds.add_samples([fo.Sample(filepath=p) for p in paths])
            seg.model_seconds, seg.images = 0.0, 0
            start = time.perf_counter()
            run(ds)
            total = time.perf_counter() - start
            assert ds.count("faseg") == count, name
            rows.append([name, total / count, seg.model_seconds / count, (total - seg.model_seconds) / count])
            ds.delete()
    common.table(f"FiftyOne run over {count} images (tiny model, 128 px), seconds per image",
                 ["variant", "total", "model", "reading + storing"], rows)
    report["variants"] = [dict(zip(("variant", "total_s", "model_s", "overhead_s"), r)) for r in rows]
    common.write_json(NAME, report, args.out)
    return report


def _model(ff, checkpoint, config, seg):
    """A FASegModel that uses the already loaded (timed) segmenter."""
    model = ff.FASegModel(model_path=str(checkpoint), classes=CLASSES, config=config)
    model._segmenter = seg
    return model


if __name__ == "__main__":
    main()

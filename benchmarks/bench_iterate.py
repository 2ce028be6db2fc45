"""Re-thresholding stored scores: `fiftyone_faseg.analysis.iterate.rethreshold` against the plain path.

The plain path (baseline, same run) is what a full run does per sample: the label map
from the scores (`faseg_core.labels_from_scores`, the function re-thresholding shares),
then one database write per sample. Ours writes in bulk. Target (issue 7): well under a
second per hundred samples on a CPU.

    python -m benchmarks.bench_iterate [--quick] [--out DIR]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from . import common

NAME = "iterate"
CLASSES = ["cat", "dog", "bird"]


def _dataset(folder: Path, count: int):
    """`count` samples (500×375) with stored 3×64×64 scores and a mask field `faseg`."""
    import fiftyone as fo

    from fiftyone_faseg.run import storage
    from fiftyone_faseg.run.settings import RunRecord

    ds = fo.Dataset()
    ds.add_samples([fo.Sample(filepath=str(folder / f"{i}.jpg"), metadata=fo.ImageMetadata(width=500, height=375))
                    for i in range(count)])
    ds.mask_targets = {"faseg": {i + 1: n for i, n in enumerate(CLASSES)}}
    ds.save()
    g = torch.Generator().manual_seed(0)
    paths = {}
    for sample_id in ds.values("id"):
        scores = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=(64, 64), mode="bicubic")
        paths[sample_id] = storage.save_scores(str(folder / f"{sample_id}.npz"), scores[0].clamp(0, 1).numpy(), CLASSES)
    ds.set_values("faseg_scores", paths, key_field="id")
    ds.set_values("faseg", [fo.Segmentation(mask=np.zeros((375, 500), np.uint8)) for _ in range(count)])
    # what a run with store_scores=True records (re-thresholding reads its settings from it)
    RunRecord(threshold=0.55, image_size=512, model_path="stored", store_scores=True).write(ds, "faseg")
    return ds


def _plain(ds, threshold: float, image_size: int):
    """The baseline: the pipeline's own label path per sample, saved sample by sample."""
    import fiftyone as fo

    from faseg_core import labels_from_scores
    from fiftyone_faseg.run import storage

    for sample in ds.select_fields(["faseg_scores", "metadata"]):
        scores, _ = storage.load_scores(sample.faseg_scores)
        labels = labels_from_scores(scores, threshold, image_size, sample.metadata.width, sample.metadata.height)
        sample["plain"] = fo.Segmentation(mask=labels)
        sample.save()


def main(argv=None) -> dict:
    args = common.parser(__doc__.split("\n")[0]).parse_args(argv)
    from fiftyone_faseg.analysis import iterate

    count, repeats = (10, 1) if args.quick else (100, 3)
    with tempfile.TemporaryDirectory() as folder:
        ds = _dataset(Path(folder), count)
        ours = common.timeit(lambda: iterate.rethreshold(ds, "faseg", 0.5, out_field="re", image_size=512, overwrite=True), repeats)
        plain = common.timeit(lambda: _plain(ds, 0.5, 512), repeats)
        same = np.mean([np.mean(s.re.get_mask() == s.plain.get_mask()) for s in ds])
        ds.delete()
    rows = [["rethreshold (ours)", ours["median_s"], 1e2 * ours["median_s"] / count],
            ["plain per-sample path", plain["median_s"], 1e2 * plain["median_s"] / count]]
    common.table(f"Re-threshold {count} samples (3×64×64 scores → 500×375 masks)",
                 ["method", "median s", "s per 100 samples"], rows)
    report = {"machine": common.machine(), "samples": count, "ours_s": ours, "plain_s": plain,
              "speedup": plain["median_s"] / ours["median_s"], "pixels_equal": float(same),
              "ours_s_per_100": 1e2 * ours["median_s"] / count}
    print(f"speed-up {report['speedup']:.1f}x, labels equal on {100 * same:.3f}% of pixels")
    common.write_json(NAME, report, args.out)
    return report


if __name__ == "__main__":
    main()

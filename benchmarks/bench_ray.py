"""What one Ray driver costs, with a zero-cost model: `segment_samples_on_ray` at 1k and 20k samples.

The model is a stub that returns a fixed half-"cat" mask of the image's size (500×375,
VOC's usual size) without computing anything, so what is measured is the run around it:
the driver's reading, feeding, result decoding and database writes, Ray's overhead,
and the actors' image reading and mask files. A local Ray with 2 actors on one CPU each.

Per dataset size (every sample points to the same 500×375 PNG, so that reading images
costs the actors little), and per variant (masks written as PNGs by the actors under
``output_dir`` / masks sent back to the driver and stored in the database):

-   *first block s*: from the call to the first written block (plan, model check, pool
    start): flat in N when the plan streams;
-   *samples/s*: samples written after the first block over the time they took (on a
    shared 2-core machine the actors and MongoDB compete with the driver for the cores);
-   *driver CPU µs/sample* and the samples/s one driver absorbs (``1e6 /`` it): the
    driver process's CPU time (all its threads, Ray's included) per sample written,
    after the first block (the pool's start is a fixed cost, in *first block s*);
-   *driver peak*: Python memory allocated during the call (``tracemalloc`` peak, in a
    separate run, as tracing slows Python down) and the growth of the driver's RSS.

Target: driver peak at 20k within 1.3× of 1k.

    python -m benchmarks.bench_ray [--quick] [--out DIR]
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np

from . import common

NAME = "ray"
CLASSES = ["cat", "dog", "bird"]
MB = 1e6


class ZeroCostSegmenter:
    """FASeg's call interface: a fixed mask (top half class 1) of each image's size, zero scores."""

    def __init__(self, tokenizer, config):
        self.tokenizer, self.config = tokenizer, config

    def __call__(self, images, classes, captions=None, config=None):
        from faseg_core.images import as_image_list, load_image
        from faseg_core.pipeline import FASegResult

        images = [load_image(i) for i in as_image_list(images)]
        lists = classes if classes and isinstance(classes[0], (list, tuple)) else [classes] * len(images)
        results = []
        for image, names in zip(images, lists):
            mask = np.zeros((image.height, image.width), np.uint8)
            mask[: image.height // 2] = 1
            results.append(FASegResult(mask, np.zeros((len(names), 2, 2), np.float32), list(names)))
        return results


class RssPeak:
    """The peak growth of this process's resident memory while the block runs (sampled every 10 ms)."""

    def __enter__(self):
        self.start = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())
        self.growth = self.peak - self.start


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _run(ds, field, seg, output_dir, traced=False):
    """One run: ``{first_block_s, samples_per_s, driver_cpu_us_per_sample, ...}``."""
    from fiftyone_faseg.distributed.engine import RayOptions, segment_samples_on_ray

    marks = []
    start, cpu = time.perf_counter(), time.process_time()
    if traced:
        tracemalloc.start()
    with RssPeak() as rss:
        summary = segment_samples_on_ray(
            ds, label_field=field, classes=CLASSES, segmenter=seg, batch_size=8, output_dir=output_dir,
            options=RayOptions(concurrency=2),
            progress=lambda done, total: marks.append((time.perf_counter(), time.process_time(), done)))
    result = {}
    if traced:
        result["python_peak_mb"] = tracemalloc.get_traced_memory()[1] / MB
        tracemalloc.stop()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    count = len(ds)
    assert len(summary.processed) == count and ds.count(field) == count, summary
    (first_t, first_cpu, first_n), (last_t, last_cpu, last_n) = marks[0], marks[-1]
    result.update(first_block_s=first_t - start, wall_s=wall, rss_growth_mb=rss.growth / MB,
                  samples_per_s=(last_n - first_n) / (last_t - first_t) if last_t > first_t else None,
                  driver_cpu_us_per_sample=(last_cpu - first_cpu) / max(1, last_n - first_n) * 1e6,
                  driver_cpu_s_whole_call=cpu)
    return result


def main(argv=None) -> dict:
    args = common.parser(__doc__.split("\n")[0]).parse_args(argv)
    import fiftyone as fo
    import ray
    from PIL import Image
    from transformers import CLIPTokenizer

    from faseg_core import FASegConfig
    from faseg_core.testing import save_diffusion_checkpoint

    sizes = (200, 1000) if args.quick else (1000, 20000)
    report = {"machine": common.machine(), "ray": ray.__version__, "sizes": list(sizes), "actors": 2,
              "batch_size": 8, "image": "500x375 PNG"}
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as folder:
            folder = Path(folder)
            checkpoint = save_diffusion_checkpoint(folder / "tiny")
            seg = ZeroCostSegmenter(CLIPTokenizer.from_pretrained(str(checkpoint), subfolder="tokenizer"),
                                    FASegConfig(batch_size=8).at_image_size(128))
            image = folder / "image.png"
            Image.fromarray(np.full((375, 500, 3), 90, np.uint8)).save(image)
            results = {}
            for count in sizes:
                ds = fo.Dataset()
                ds.add_samples([fo.Sample(filepath=str(image)) for _ in range(count)], progress=False)
                try:
                    files = _run(ds, "files", seg, str(folder / "masks"))
                    back = _run(ds, "back", seg, None)
                    traced = _run(ds, "traced", seg, str(folder / "masks"), traced=True)
                finally:
                    ds.delete()
                results[count] = dict(output_dir=files, masks_back=back, memory=traced)
                for variant, r in (("masks as PNGs by the actors (output_dir)", files),
                                   ("masks back to the driver", back)):
                    rows.append([count, variant, r["first_block_s"], r["samples_per_s"],
                                 r["driver_cpu_us_per_sample"], 1e6 / r["driver_cpu_us_per_sample"]])
    finally:
        ray.shutdown()

    common.table("Ray driver, zero-cost model, 2 actors, batch 8, 500×375 masks",
                 ["samples", "variant", "first block s", "samples/s", "driver CPU µs/sample",
                  "samples/s one driver absorbs"], rows)
    small, large = sizes
    mem_rows = [[n, results[n]["memory"]["python_peak_mb"], results[n]["memory"]["rss_growth_mb"],
                 results[n]["output_dir"]["rss_growth_mb"]] for n in sizes]
    common.table("Ray driver peak memory during the call (output_dir)",
                 ["samples", "Python peak MB (tracemalloc)", "RSS growth MB (traced run)", "RSS growth MB (untraced)"],
                 mem_rows)
    ratio = results[large]["memory"]["python_peak_mb"] / results[small]["memory"]["python_peak_mb"]
    print(f"driver Python peak, {large} / {small} samples: {ratio:.2f}x (target <= 1.3x)", flush=True)
    report["results"] = {str(n): r for n, r in results.items()}
    report["python_peak_ratio"] = ratio
    report["python_peak_ratio_met"] = ratio <= 1.3
    common.write_json(NAME, report, args.out)
    return report


if __name__ == "__main__":
    main()

"""The Ray backend on one machine: `segment_samples_on_ray` with 1 and 2 actors, against a
local `segment_samples` in the same run.

A local Ray with one CPU per actor (Ray gives each actor one torch thread), the tiny model
at 128 px, masks written under `output_dir` by the actors. Reported per variant: the
whole call's wall time (plan, actor start and model load, segmentation, writes), the
time to the first written block, and the steady throughput after it (samples written
after the first block over the time they took), which is what more actors buy. The
local baseline runs with one torch thread (one actor's share) and with all cores.

    python -m benchmarks.bench_ray [--quick] [--out DIR]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path


from . import common

NAME = "ray"
CLASSES = ["cat", "dog", "bird"]


def _timed(run, count):
    """`(total s, first block s, steady samples/s)` of one run calling `progress(done, total)`."""
    marks = []
    start = time.perf_counter()
    run(lambda done, total: marks.append((time.perf_counter() - start, done)))
    total = time.perf_counter() - start
    first_t, first_n = marks[0]
    last_t, last_n = marks[-1]
    steady = (last_n - first_n) / (last_t - first_t) if last_t > first_t else None
    assert last_n == count, marks
    return total, first_t, steady


def main(argv=None) -> dict:
    args = common.parser(__doc__.split("\n")[0]).parse_args(argv)
    import fiftyone as fo
    import ray
    import torch

    import fiftyone_faseg as ff
    from faseg_core.testing import save_diffusion_checkpoint
    from fiftyone_faseg.distributed import segment_samples_on_ray

    count = 32 if args.quick else 512
    repeats = 1 if args.quick else 3
    chunk, batch = 16, 8
    report = {"machine": common.machine(), "images": count, "image_size": 128, "batch_size": batch,
              "chunk_size": chunk, "repeats": repeats, "ray": ray.__version__}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        checkpoint = save_diffusion_checkpoint(folder / "tiny")
        paths = common.random_jpegs(folder, count)
        settings = dict(classes=CLASSES, model_path=str(checkpoint), image_size=128, batch_size=batch,
                        output_dir=str(folder / "masks"))

        def local(threads):
            def run(progress):
                torch.set_num_threads(threads)
                try:
                    ff.segment_samples(ds, progress=progress, **settings)
                finally:
                    torch.set_num_threads(all_threads)
            return run

        def on_ray(actors):
            return lambda progress: segment_samples_on_ray(ds, concurrency=actors, chunk_size=chunk,
                                                           progress=progress, **settings)

        all_threads = torch.get_num_threads()
        variants = {
            "segment_samples, 1 torch thread": local(1),
            f"segment_samples, {all_threads} torch threads": local(all_threads),
            "Ray, 1 actor": on_ray(1),
            "Ray, 2 actors": on_ray(2),
        }
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            ff.load_segmenter(str(checkpoint))  # the local runs' model, loaded once (the actors load theirs)
            runs = {name: [] for name in variants}
            for _ in range(repeats):
                for name, run in variants.items():
                    ds = fo.Dataset()
                    ds.add_samples([fo.Sample(filepath=p) for p in paths])
                    runs[name].append(_timed(run, count))
                    assert ds.count("faseg") == count, name
                    ds.delete()
        finally:
            ray.shutdown()

    rows = []
    for name, timings in runs.items():
        total, first, steady = (statistics.median(t[i] for t in timings) for i in range(3))
        rows.append([name, total, first, steady, max(t[2] for t in timings)])
    by_name = {r[0]: r for r in rows}
    ratio = by_name["Ray, 2 actors"][3] / by_name["Ray, 1 actor"][3]
    best_ratio = by_name["Ray, 2 actors"][4] / by_name["Ray, 1 actor"][4]
    common.table(f"{count} images (500x375 JPEG), tiny model at 128 px, batch {batch}, Ray blocks of {chunk}; "
                 f"medians of {repeats} (and the best steady throughput)",
                 ["variant", "total s", "first block s", "steady samples/s", "best steady samples/s"], rows)
    print(f"steady throughput, 2 actors / 1 actor: {ratio:.2f}x (medians), {best_ratio:.2f}x (best runs)", flush=True)
    keys = ("variant", "total_s", "first_block_s", "steady_samples_per_s", "best_steady_samples_per_s")
    report["variants"] = [dict(zip(keys, r)) for r in rows]
    report["runs"] = {name: [list(t) for t in timings] for name, timings in runs.items()}
    report["steady_ratio_2_vs_1_actor"] = ratio
    report["best_steady_ratio_2_vs_1_actor"] = best_ratio
    common.write_json(NAME, report, args.out)
    return report


if __name__ == "__main__":
    main()

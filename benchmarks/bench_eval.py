"""FA-Seg evaluation: memory flat in the number of samples, and the cost of the per-sample extras.

Synthetic masks in the database (K = 171 classes, COCO-Stuff's count; a few rectangles of
random classes per image, the prediction shifted, relabelled and speckled with the classes
present and three others, numbered
differently from the ground truth so classes are matched by name). Two measurements:

- **memory** (issue 15): `evaluate_faseg` with every output on, at N and 5·N samples, each in
  a fresh process: the peak of memory allocated during the evaluation (`tracemalloc`, which
  sees Python objects and numpy arrays) and the growth of the process's peak RSS. Flat in N
  means the 5·N / N ratio stays near 1 (the old code kept a K×K matrix per sample: 1.1 GB at
  5,000 samples).
- **memory in a long-lived process** (issue 21): one process that first ran `segment_samples`
  several times (a stub model) and keeps a thread that makes cyclic garbage at a steady rate,
  as an App server's threads do; then evaluations of N and 4·N samples in that process. The
  evaluation used to switch the garbage collector off for the whole process while it ran, so
  everything the other threads dropped meanwhile stayed until it ended: memory grew with the
  evaluation's length (old code, N = 300 / 1,200: 120 / 344 MB; now 34 / 36 MB).
- **time** (issue 13): the whole evaluation with the extras (`<eval_key>_classes`,
  `_confusions`, `_errors`) against `evaluate_faseg(per_class=False, error_masks=False)` on
  the same samples; target ratio ≤ 2.

    python -m benchmarks.bench_eval [--quick] [--out DIR] [--samples N] [--keep]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np

from . import common

NAME = "eval"
NUM_CLASSES = 171
SHAPE = (120, 160)
DATASET = "faseg-bench-eval-%d"
BASE = dict(per_class=False, error_masks=False, threshold_curve=False)


def make_dataset(name, num_samples, num_classes=NUM_CLASSES, shape=SHAPE, seed=0):
    """A dataset of ``num_samples`` synthetic ``gt``/``pred`` mask pairs (in the database)."""
    import fiftyone as fo

    rng = np.random.default_rng(seed)
    ds = fo.Dataset(name, overwrite=True)
    perm = np.concatenate([[0], rng.permutation(np.arange(1, num_classes))])  # pred value of class c
    h, w = shape
    samples = []
    for i in range(num_samples):
        gt = np.zeros(shape, np.uint8)
        for c in rng.choice(np.arange(1, num_classes), size=rng.integers(2, 7), replace=False):
            y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
            gt[y : y + rng.integers(8, h // 2), x : x + rng.integers(8, w // 2)] = c
        pred = np.roll(gt, shift=(int(rng.integers(-4, 5)), int(rng.integers(-4, 5))), axis=(0, 1))
        if rng.random() < 0.3:  # one object called another class
            pred[pred == pred.max()] = rng.integers(1, num_classes)
        speckle = rng.random(shape) < 0.02  # speckles of the classes present and 3 others
        pool = np.concatenate([np.unique(gt), rng.integers(1, num_classes, size=3)])
        pred[speckle] = rng.choice(pool, size=int(speckle.sum()))
        gt[0, :] = 255  # a void border row, ignored
        samples.append(fo.Sample(filepath="/tmp/faseg-bench-eval/%d.jpg" % i,
                                 gt=fo.Segmentation(mask=gt), pred=fo.Segmentation(mask=perm[pred].astype(np.uint8))))
        if len(samples) == 500:
            ds.add_samples(samples, progress=False)
            samples = []
    if samples:
        ds.add_samples(samples, progress=False)
    names = ["background"] + ["class_%03d" % c for c in range(1, num_classes)]
    ds.mask_targets = {"gt": {c: names[c] for c in range(1, num_classes)},
                       "pred": {int(perm[c]): names[c].upper() for c in range(1, num_classes)}}
    ds.save()
    return ds


def _evaluate(ds, eval_key, kwargs):
    from fiftyone_faseg.evaluation import evaluate_faseg

    return evaluate_faseg(ds, "pred", gt_field="gt", eval_key=eval_key, progress=False, **kwargs)


def _mongod():
    """The database server's process (its CPU time counts: on a shared machine, CPU
    seconds are steadier than wall seconds), or None."""
    import psutil

    import fiftyone as fo

    uri = fo.config.database_uri or ""
    key = uri.rsplit(":", 1)[-1].strip("/") if uri else fo.config.database_dir
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] == "mongod" and key and key in " ".join(proc.info["cmdline"] or []):
            return proc
    return None


def _timed(fn):
    """Wall seconds and CPU seconds (this process, all threads, + the database server)."""
    server = _mongod()

    def cpu():
        t = server.cpu_times() if server is not None else None
        return time.process_time() + (t.user + t.system if t else 0.0)

    c0, t0 = cpu(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, cpu() - c0


def _medians(runs):
    import statistics

    return {"median_s": statistics.median(r[0] for r in runs), "cpu_s": statistics.median(r[1] for r in runs),
            "runs": runs}


def _child(spec):
    """One memory measurement in this (fresh) process: tracemalloc peak and RSS growth."""
    import gc
    import resource
    import tracemalloc

    import fiftyone as fo

    ds = fo.load_dataset(spec["dataset"])
    _evaluate(ds.limit(2), "warmup", BASE)  # imports and first-call caches
    ds.delete_evaluation("warmup")
    gc.collect()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    start = time.perf_counter()
    _evaluate(ds, "mem", spec["kwargs"])
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0
    ds.delete_evaluation("mem")
    print(json.dumps({"traced_peak_bytes": peak, "rss_growth_bytes": rss, "seconds": seconds}))


def _long_lived(spec):
    """Evaluations of several sizes in one process that ran segment_samples first and keeps
    a thread making cyclic garbage (see the module's docstring); tracemalloc peaks."""
    import gc
    import tempfile
    import threading
    import tracemalloc
    from pathlib import Path

    import fiftyone as fo
    from PIL import Image

    import fiftyone_faseg as ff
    from faseg_core import FASegConfig
    from faseg_core.testing import save_clip_tokenizer
    from transformers import CLIPTokenizer

    from .bench_plumbing import StubSegmenter

    folder = Path(tempfile.mkdtemp())
    path = str(folder / "one.png")
    Image.fromarray(np.full((24, 32, 3), 128, np.uint8)).save(path)
    tokenizer = CLIPTokenizer.from_pretrained(str(save_clip_tokenizer(folder / "tok")), model_max_length=77)
    stub = StubSegmenter(tokenizer, FASegConfig(batch_size=8).at_image_size(128))
    for _ in range(spec["runs"]):
        ds = fo.Dataset()
        ds.add_samples([fo.Sample(filepath=path) for _ in range(spec["run_samples"])], progress=False)
        ff.segment_samples(ds, classes=["cat", "dog", "bird"], segmenter=stub)
        ds.delete()

    stop = threading.Event()

    def server():  # request objects, futures with tracebacks...: cycles, freed only by the GC
        while not stop.is_set():
            for _ in range(50):
                obj = {"payload": bytearray(2048)}
                obj["self"] = obj
            time.sleep(0.001)

    threading.Thread(target=server, daemon=True).start()
    out = {}
    for name in spec["datasets"]:
        ds = fo.load_dataset(name)
        _evaluate(ds.limit(2), "warmup", BASE)
        ds.delete_evaluation("warmup")
        gc.collect()
        tracemalloc.start()
        _evaluate(ds, "mem", spec["kwargs"])
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        ds.delete_evaluation("mem")
        out[str(len(ds))] = {"traced_peak_bytes": peak}
    stop.set()
    print(json.dumps(out))


def _measure_long_lived(datasets, runs=12, run_samples=400):
    spec = json.dumps({"datasets": datasets, "kwargs": {"threshold_curve": False}, "runs": runs,
                       "run_samples": run_samples})
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_eval", "--long-lived", spec],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _measure_memory(dataset, kwargs):
    spec = json.dumps({"dataset": dataset, "kwargs": kwargs})
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_eval", "--child", spec],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    p = common.parser(__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=None, help="N (memory at N and 5·N; time at 5·N)")
    p.add_argument("--keep", action="store_true", help="keep the synthetic datasets (faster reruns)")
    p.add_argument("--child", help=None)
    p.add_argument("--long-lived", help=None)
    args = p.parse_args(argv)
    if args.child:
        return _child(json.loads(args.child))
    if args.long_lived:
        return _long_lived(json.loads(args.long_lived))

    import fiftyone as fo

    small = args.samples or (20 if args.quick else 1000)
    sizes = [small, 5 * small]
    lived_sizes = [small, 4 * small]
    repeats = 1 if args.quick else 3
    datasets = {}
    for n in sorted(set(sizes + lived_sizes)):
        name = DATASET % n
        if fo.dataset_exists(name) and len(fo.load_dataset(name)) == n:
            datasets[n] = fo.load_dataset(name)
        else:
            datasets[n] = make_dataset(name, n)

    memory = {}
    memory["all outputs"] = {n: _measure_memory(datasets[n].name, {}) for n in sizes}
    lived = _measure_long_lived([datasets[n].name for n in lived_sizes], runs=2 if args.quick else 12)

    big = datasets[sizes[-1]]
    times = {label: [] for label in ("without extras", "with extras")}
    for _ in range(repeats):  # alternating, so both variants see the same machine load
        for label, kwargs in (("without extras", BASE), ("with extras", {})):
            times[label].append(_timed(lambda: _evaluate(big, "bench", kwargs)))
    big.delete_evaluation("bench")
    times = {label: _medians(runs) for label, runs in times.items()}

    ratio_time = times["with extras"]["median_s"] / times["without extras"]["median_s"]
    ratio_cpu = times["with extras"]["cpu_s"] / times["without extras"]["cpu_s"]
    mem_rows = []
    for label, by_n in memory.items():
        a, b = by_n[sizes[0]], by_n[sizes[1]]
        mem_rows.append([label, a["traced_peak_bytes"] / common.MB, b["traced_peak_bytes"] / common.MB,
                         b["traced_peak_bytes"] / a["traced_peak_bytes"],
                         a["rss_growth_bytes"] / common.MB, b["rss_growth_bytes"] / common.MB])
    text = common.table(
        f"Evaluation peak memory, K = {NUM_CLASSES}, {SHAPE[1]}×{SHAPE[0]} masks",
        ["variant", f"traced peak MB, N={sizes[0]}", f"traced peak MB, N={sizes[1]}", "ratio",
         f"RSS growth MB, N={sizes[0]}", f"RSS growth MB, N={sizes[1]}"], mem_rows)
    a, b = (lived[str(n)]["traced_peak_bytes"] for n in lived_sizes)
    lived_ratio = b / a
    text += common.table(
        "Evaluation peak memory in a long-lived process (after segment_samples runs, a thread making garbage)",
        ["variant", f"traced peak MB, N={lived_sizes[0]}", f"traced peak MB, N={lived_sizes[1]}", "ratio"],
        [["all outputs", a / common.MB, b / common.MB, lived_ratio]])
    text += common.table(
        f"Whole evaluation, {sizes[1]} samples (median of {repeats})",
        ["variant", "wall s", "ms per sample", "CPU s (ours + mongod)"],
        [[label, t["median_s"], 1e3 * t["median_s"] / sizes[1], t["cpu_s"]] for label, t in times.items()])
    print(f"extras / without: {ratio_time:.2f}x wall, {ratio_cpu:.2f}x CPU (target <= 2)")
    report = {
        "machine": common.machine(), "num_classes": NUM_CLASSES, "shape": SHAPE, "sizes": sizes,
        "memory": {label: {str(n): v for n, v in by_n.items()} for label, by_n in memory.items()},
        "memory_ratio": mem_rows[0][3], "long_lived": {"sizes": lived_sizes, "memory": lived,
                                                       "memory_ratio": lived_ratio,
                                                       "memory_ratio_met": lived_ratio <= 1.5},
        "times": times, "time_ratio": ratio_time,
        "cpu_ratio": ratio_cpu, "time_ratio_met": ratio_time <= 2.0, "markdown": text,
    }
    common.write_json(NAME, report, args.out)
    if not args.keep:
        for ds in datasets.values():
            ds.delete()
    return report


if __name__ == "__main__":
    main()

"""What a FiftyOne run costs beyond the model, and whether the model waits for it.

1.  **Overlap** (issue 14): the tiny model (128 px) with torch on one thread, so reading
    images and writing results have the other core. A ``segment_samples`` run's wall time
    against the bare ``FASeg`` call on the same images (target <= 1.15x), and its
    plumbing per sample against FiftyOne's ``apply_model`` loop (target <= 1.5x).
2.  **Flat cost per sample** (issue 15): a stub model that returns fixed masks, so only
    the plumbing is timed, over views whose cost used to grow with the dataset or the id
    list: ``take(200)`` and ``sort_by().limit(200)`` of datasets of 1k and 50k samples,
    and selections of every id (1k and 50k). Per-sample time as a ratio to
    ``apply_model`` on the same view (target: flat within 10 % from 1k to 50k). Medians
    of 3 runs.
3.  **Small views of big datasets** (issue 21): the stub model again, ``take(200)`` and
    ``select(200 ids)`` (ids drawn at random) of datasets of 1k and 20k samples: the
    plumbing per sample of ``segment_samples`` (target: 20k / 1k within 1.3x), and what
    FiftyOne alone spends on the view (``values("_id")``) and on writing the same labels
    with ``set_values`` (the public path), for comparison. Wall clock and CPU time (this
    process's and the local mongod's: the steadier measure on a shared machine). Medians
    of 5 runs after a warm-up, each on the dataset's original schema.

    python -m benchmarks.bench_plumbing [--quick] [--only scaling] [--out DIR]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import common

NAME = "plumbing"
CLASSES = ["cat", "dog", "bird"]


class StubSegmenter:
    """Fixed all-"cat" masks of each image's size: only the plumbing around the model is timed."""

    def __init__(self, tokenizer, config):
        self.tokenizer, self.config = tokenizer, config

    def __call__(self, images, classes, captions=None, config=None):
        from faseg_core.images import as_image_list, load_image
        from faseg_core.pipeline import FASegResult

        images = [load_image(i) for i in as_image_list(images)]
        lists = classes if classes and isinstance(classes[0], (list, tuple)) else [classes] * len(images)
        return [FASegResult(np.ones((im.height, im.width), np.uint8), np.zeros((len(c), 2, 2), np.float32), list(c))
                for im, c in zip(images, lists)]


def _model(checkpoint, config, seg):
    import fiftyone_faseg as ff

    model = ff.FASegModel(model_path=str(checkpoint), classes=CLASSES, config=config)
    model._segmenter = seg
    return model


def _dataset(paths):
    import fiftyone as fo

    ds = fo.Dataset()
    ds.add_samples([fo.Sample(filepath=p) for p in paths], progress=False)
    return ds


def overlap(folder: Path, count: int) -> list[list]:
    import fiftyone_faseg as ff
    from faseg_core import FASeg, FASegConfig
    from faseg_core.testing import save_diffusion_checkpoint
    from fiftyone_faseg.protocol.harness import TimedSegmenter

    paths = common.random_jpegs(folder, count)
    checkpoint = save_diffusion_checkpoint(folder / "tiny")
    config = FASegConfig(batch_size=8).at_image_size(128)
    seg = TimedSegmenter(FASeg.from_pretrained(checkpoint, config=config, device="cpu"))
    seg(paths[:1], CLASSES)  # warm-up
    runs = {
        "bare FASeg call": lambda ds: seg.segmenter(paths, CLASSES, config=config),
        "segment_samples (masks in the database)": lambda ds: ff.segment_samples(ds, classes=CLASSES, segmenter=seg),
        "apply_model (FiftyOne's loop)": lambda ds: ds.apply_model(_model(checkpoint, config, seg), "faseg",
                                                                    batch_size=8, progress=False),
    }
    results = {}
    for name, run in runs.items():
        walls, models = [], []
        for _ in range(3):
            ds = _dataset(paths)
            seg.model_seconds = 0.0
            start = time.perf_counter()
            run(ds)
            walls.append(time.perf_counter() - start)
            models.append(seg.model_seconds)
            ds.delete()
        i = int(np.argsort(walls)[1])  # the median run
        results[name] = (walls[i] / count, models[i] / count)
    bare = results["bare FASeg call"][0]
    base = results["apply_model (FiftyOne's loop)"]
    rows = []
    for name, (wall, model) in results.items():
        plumbing = wall - model if name != "bare FASeg call" else None
        rows.append([name, wall * 1e3, wall / bare, None if plumbing is None else plumbing * 1e3,
                     None if plumbing is None else plumbing / (base[0] - base[1])])
    return rows


def flat_cost(folder: Path, sizes: list[int], view_size: int, repeats: int = 3) -> list[list]:
    import fiftyone_faseg as ff
    from faseg_core import FASegConfig
    from faseg_core.testing import save_clip_tokenizer
    from transformers import CLIPTokenizer

    path = str(folder / "one.png")
    Image.fromarray(np.full((24, 32, 3), 128, np.uint8)).save(path)
    tokenizer = CLIPTokenizer.from_pretrained(str(save_clip_tokenizer(folder / "tok")), model_max_length=77)
    config = FASegConfig(batch_size=8).at_image_size(128)
    stub = StubSegmenter(tokenizer, config)
    rows = []
    for size in sizes:
        ds = _dataset([path] * size)
        views = {
            "take(%d)" % view_size: lambda: ds.take(view_size, seed=0),
            "sort_by().limit(%d)" % view_size: lambda: ds.sort_by("_rand").limit(view_size),
            "select(%d ids)" % size: lambda: ds.select(ds.values("id")),
        }
        for k, (name, make) in enumerate(views.items()):
            view = make()
            n = view.count()
            times = {}
            for label, run in (("segment_samples", lambda f: ff.segment_samples(view, label_field=f, classes=CLASSES,
                                                                              segmenter=stub)),
                               ("apply_model", lambda f: view.apply_model(_model("stub", config, stub), f,
                                                                          batch_size=8, progress=False))):
                runs = []
                for repeat in range(repeats):
                    start = time.perf_counter()
                    run("%s_%d_%d" % (label, k, repeat))
                    runs.append((time.perf_counter() - start) / n)
                times[label] = float(np.median(runs))
            rows.append([size, name, n, times["segment_samples"] * 1e3, times["apply_model"] * 1e3,
                         times["segment_samples"] / times["apply_model"]])
        ds.delete()
    return rows


def _mongod_pid():
    """The pid of the local mongod this process uses (its port in ``FIFTYONE_DATABASE_URI``,
    else FiftyOne's own service), or None."""
    import os
    import re

    port = re.search(r":(\d+)", os.environ.get("FIFTYONE_DATABASE_URI", ""))
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path("/proc/%s/cmdline" % pid).read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"mongod") and (port is None or port.group(1).encode() in cmd):
            return int(pid)
    return None


def _cpu(pid):
    """CPU seconds of this process and of process ``pid`` (the database; 0 if None)."""
    import os

    own = time.process_time()
    if pid is None:
        return own
    fields = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()
    return own + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _median_time(run, repeats, pid=None, dataset=None):
    """``(median wall seconds, median CPU seconds of this process and the database)`` of
    ``run(repeat)``, after one untimed warm-up call (``run("w")``). On a shared machine the
    CPU seconds are the steadier measure of the work done. With ``dataset``, the fields and
    mask_targets each call adds are deleted after it (untimed), so that every call sees the
    same schema (a schema that grows costs more at every later write)."""
    walls, cpus = [], []
    for repeat in ["w"] + list(range(repeats)):
        fields = set(dataset.get_field_schema()) if dataset is not None else None
        start, cpu = time.perf_counter(), _cpu(pid)
        run(repeat)
        if repeat != "w":
            walls.append(time.perf_counter() - start)
            cpus.append(_cpu(pid) - cpu)
        if dataset is not None:
            new = [f for f in dataset.get_field_schema() if f not in fields]
            dataset.delete_sample_fields(new)
            dataset.mask_targets = {k: v for k, v in dataset.mask_targets.items() if k not in new}
            dataset.save()
    return float(np.median(walls)), float(np.median(cpus))


def scaling(folder: Path, sizes: list[int], view_size: int, repeats: int = 5) -> list[list]:
    """Per-sample ms of ``segment_samples`` (stub model) on small views of each dataset
    size, with what FiftyOne alone spends reading the view's ids and writing the labels."""
    import fiftyone as fo
    import fiftyone_faseg as ff
    from faseg_core import FASegConfig
    from faseg_core.testing import save_clip_tokenizer
    from transformers import CLIPTokenizer

    path = str(folder / "one.png")
    Image.fromarray(np.full((24, 32, 3), 128, np.uint8)).save(path)
    tokenizer = CLIPTokenizer.from_pretrained(str(save_clip_tokenizer(folder / "tok")), model_max_length=77)
    stub = StubSegmenter(tokenizer, FASegConfig(batch_size=8).at_image_size(128))
    mask = fo.Segmentation(mask=np.ones((24, 32), np.uint8))
    pid = _mongod_pid()
    rows = []
    for size in sizes:
        ds = _dataset([path] * size)
        ids = ds.values("id")
        chosen = [ids[i] for i in np.random.default_rng(0).choice(size, view_size, replace=False)]
        views = {"take(%d)" % view_size: ds.take(view_size, seed=0),
                 "select(%d ids)" % view_size: ds.select(chosen)}
        for k, (name, view) in enumerate(views.items()):
            n = view.count()
            run = _median_time(lambda r: ff.segment_samples(view, label_field="f_%d_%s" % (k, r), classes=CLASSES,
                                                            segmenter=stub), repeats, pid, ds)
            read = _median_time(lambda r: view.values("_id"), repeats, pid)
            write = _median_time(lambda r: view.set_values("g_%d_%s" % (k, r), [mask.copy() for _ in range(n)]),
                                 repeats, pid, ds)
            rows.append([size, name, n, run[0] / n * 1e3, run[1] / n * 1e3, read[1] / n * 1e3, write[1] / n * 1e3])
        ds.delete()
    small = {r[1]: r for r in rows if r[0] == sizes[0]}
    for row in rows:
        row += [row[3] / small[row[1]][3], row[4] / small[row[1]][4]]
    return rows


def main(argv=None) -> dict:
    p = common.parser(__doc__.split("\n")[0])
    p.add_argument("--only", choices=["overlap", "flat", "scaling"], help="run one part")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # the model on one core, the plumbing on the other
    report = {"machine": common.machine()}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        if args.only in (None, "scaling"):
            rows = scaling(folder, [500, 2000] if args.quick else [1000, 20000], 50 if args.quick else 200,
                           1 if args.quick else 5)
            common.table("Small views of big datasets (stub model), ms per sample",
                         ["dataset", "view", "samples", "segment_samples wall", "segment_samples CPU",
                          "values('_id') CPU", "set_values CPU (FiftyOne)", "wall / smallest dataset's",
                          "CPU / smallest dataset's"], rows)
            report["scaling"] = [dict(zip(("dataset", "view", "samples", "segment_samples_wall_ms",
                                           "segment_samples_cpu_ms", "view_ids_cpu_ms", "set_values_cpu_ms",
                                           "wall_ratio", "cpu_ratio"), r)) for r in rows]
        if args.only in (None, "overlap"):
            rows = overlap(folder, 8 if args.quick else 48)
            common.table("Overlap: tiny model (128 px), torch on 1 thread, ms per image",
                         ["variant", "wall", "wall / bare call", "plumbing", "plumbing / apply_model's"], rows)
            report["overlap"] = [dict(zip(("variant", "wall_ms", "wall_ratio", "plumbing_ms", "plumbing_ratio"), r))
                                 for r in rows]
        if args.only in (None, "flat"):
            sizes = [500, 2000] if args.quick else [1000, 50000]
            rows = flat_cost(folder, sizes, 50 if args.quick else 200, 1 if args.quick else 3)
            common.table("Plumbing per sample (stub model), ms", ["dataset", "view", "samples", "segment_samples",
                                                                  "apply_model", "ratio"], rows)
            report["flat_cost"] = [dict(zip(("dataset", "view", "samples", "segment_samples_ms", "apply_model_ms",
                                             "ratio"), r)) for r in rows]
    common.write_json(NAME, report, args.out)
    return report


if __name__ == "__main__":
    main()

"""Shared benchmark helpers: timing, allocated-memory accounting, tables, JSON, machine description.

Memory is measured as **bytes allocated by torch beyond what was allocated when the measured
region began** (peak of the running total of allocations minus frees):

- on CUDA with `torch.cuda.max_memory_allocated()` after `reset_peak_memory_stats()`;
- on the CPU from the memory events of `torch.profiler` (`profile_memory=True`): every
  allocation and free of the CPU allocator, summed in time order. Input tensors created
  before the region are not counted; memory that is not a torch tensor (Python objects,
  oneDNN scratch space) is not either.

Regions can be nested inside one measured run with `Meter.stage(name)`, which gives each
stage its own time and peak.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import torch

OUT_DIR = Path(__file__).resolve().parent / "out"
MB = 1e6
_STAGE = "stage::"


def parser(description: str) -> argparse.ArgumentParser:
    """The arguments every benchmark takes: `--quick` (tiny sizes) and `--out DIR`."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="tiny sizes, few repeats (a smoke run, not a measurement)")
    p.add_argument("--out", type=Path, default=OUT_DIR, help=f"folder of the JSON results (default {OUT_DIR})")
    return p


# ---------------------------------------------------------------------------- machine
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """Where the numbers come from: CPU, cores, torch threads, library versions, GPU if any."""
    import diffusers

    info = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "gpu": None,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
    return info


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync(dev: torch.device | str | None = None):
    if torch.device(dev or device()).type == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------- timing
def timeit(fn, repeats: int = 5, warmup: int = 1) -> dict:
    """Wall seconds of `fn()`: `warmup` untimed runs, then the median (and all) of `repeats` runs."""
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        runs.append(time.perf_counter() - start)
    return {"median_s": statistics.median(runs), "min_s": min(runs), "runs_s": runs}


# ---------------------------------------------------------------------------- memory
def _cpu_peaks(prof, windows: dict[str, list[tuple[int, int]]]) -> dict[str, int]:
    """Peak bytes beyond the start of each window, from the profiler's CPU memory events."""
    events = prof.profiler.kineto_results.events()
    memory = sorted(
        (e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]" and e.device_type().name == "CPU"
    )
    peaks = {}
    for name, spans in windows.items():
        best = 0
        for start, end in spans:
            total = peak = 0
            for t, nbytes in memory:
                if t < start:
                    continue
                if t > end:
                    break
                total += nbytes
                peak = max(peak, total)
            best = max(best, peak)
        peaks[name] = best
    return peaks


class Meter:
    """Times and allocated-memory peaks of named stages, and of the whole measured region.

    Usage::

        meter = Meter(memory=True)
        with meter.measure():
            with meter.stage("a"): ...
            with meter.stage("b"): ...
        meter.seconds["a"], meter.peak_bytes["a"], meter.peak_bytes["total"]

    A stage entered several times adds its times and keeps its largest peak. With
    `memory=False` nothing is profiled (for timing runs). On CUDA, `peak_bytes["total"]`
    also has an absolute counterpart, `max_allocated_bytes` (weights included).
    """

    def __init__(self, memory: bool = True, dev: torch.device | None = None):
        self.memory = memory
        self.dev = torch.device(dev or device())
        self.seconds: dict[str, float] = defaultdict(float)
        self.peak_bytes: dict[str, int] = {}
        self.max_allocated_bytes: int | None = None
        self._windows: dict[str, list[tuple[int, int]]] = defaultdict(list)
        self._cuda = self.dev.type == "cuda"
        self._open: list[tuple[str, int]] = []  # CUDA: (stage, allocated bytes at its start)

    def _fold_cuda_peak(self):
        """Credit the CUDA peak since the last reset to every open stage (stages nest)."""
        peak = torch.cuda.max_memory_allocated(self.dev)
        self.max_allocated_bytes = max(self.max_allocated_bytes or 0, peak)
        for name, base in self._open:
            self.peak_bytes[name] = max(self.peak_bytes.get(name, 0), peak - base)

    @contextmanager
    def stage(self, name: str):
        sync(self.dev)
        cuda_memory = self.memory and self._cuda
        if cuda_memory:
            self._fold_cuda_peak()
            torch.cuda.reset_peak_memory_stats(self.dev)
            self._open.append((name, torch.cuda.memory_allocated(self.dev)))
        start_ns = time.perf_counter_ns()
        with torch.profiler.record_function(_STAGE + name):
            try:
                yield
            finally:
                sync(self.dev)
                self.seconds[name] += (time.perf_counter_ns() - start_ns) / 1e9
                if cuda_memory:
                    self._fold_cuda_peak()
                    self._open.pop()

    @contextmanager
    def measure(self):
        """The measured region; stages inside it are attributed their own peaks."""
        if not self.memory or self._cuda:
            if self._cuda:
                torch.cuda.reset_peak_memory_stats(self.dev)
            with self.stage("total"):
                yield self
            return
        activities = [torch.profiler.ProfilerActivity.CPU]
        with torch.profiler.profile(activities=activities, profile_memory=True) as prof:
            with self.stage("total"):
                yield self
        for e in prof.profiler.kineto_results.events():
            if e.name().startswith(_STAGE):
                self._windows[e.name()[len(_STAGE):]].append((e.start_ns(), e.start_ns() + e.duration_ns()))
        self.peak_bytes.update(_cpu_peaks(prof, self._windows))


def peak_allocated(fn, dev: torch.device | None = None) -> int:
    """Peak bytes `fn()` allocates beyond what was allocated before it."""
    meter = Meter(memory=True, dev=dev)
    with meter.measure():
        fn()
    return meter.peak_bytes["total"]


# ---------------------------------------------------------------------------- output
def _cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def table(title: str, headers: list[str], rows: list[list]) -> str:
    """A Markdown table (with a bold title line), printed and returned."""
    lines = [f"**{title}**", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    text = "\n".join(lines) + "\n"
    print(text, flush=True)
    return text


def describe_machine(info: dict) -> str:
    gpu = info["gpu"] or "none"
    return (
        f"Machine: {info['cpu']}, {info['cores']} cores ({info['torch_threads']} torch threads), GPU: {gpu}; "
        f"torch {info['torch']}, diffusers {info['diffusers']}, Python {info['python']}; {info['date']}"
    )


def write_json(name: str, data: dict, out_dir: Path | str = OUT_DIR) -> Path:
    """`data` as `<out_dir>/<name>.json`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"wrote {path}", flush=True)
    return path


def random_jpegs(folder, count: int, size=(375, 500)) -> list[str]:
    """``count`` JPEGs of random pixels (``size`` = height, width, VOC's usual 375×500) under ``folder``."""
    import numpy as np
    from PIL import Image

    rng = np.random.RandomState(0)
    paths = []
    for i in range(count):
        path = Path(folder) / f"{i}.jpg"
        Image.fromarray(rng.randint(0, 256, (*size, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths

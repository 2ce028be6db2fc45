"""HARD: `faseg_core.hard.refine` against the dense formulation, in the same run.

The dense formulation (FASEG_REFERENCE.md §6, as the reference computes it) forms, for each
self-attention grid r below the output grid, the S²×S² affinity A_r (bicubic upsampling of
the query grid, nearest repetition of the keys), raises it to the power τ with a matrix
power, multiplies by the fused cross map, min–max normalises and sums with the weights.
Ours evaluates A_r^τ·c right to left on the r×r grid.

Reported: median wall time, peak bytes allocated beyond the input maps (see
`benchmarks.common`), their ratios, and the largest relative difference of the two results.
Targets (from the issue): ≥ 30× faster, ≥ 10× less memory.

    python -m benchmarks.bench_hard [--quick] [--out DIR]
"""

from __future__ import annotations

import torch

from faseg_core import hard
from faseg_core.config import default_cross_weights, default_self_weights
from faseg_core.testing.dense_hard import dense_refine

from . import common

NAME = "hard"
TARGET_SPEEDUP, TARGET_MEMORY = 30.0, 10.0
PAPER_SIDE = 64


# ---------------------------------------------------------------------------- inputs
def scaled(weights: dict[int, float], side: int) -> dict[int, float]:
    """The paper's per-grid weights moved from a 64 grid to a `side` grid."""
    return {r * side // PAPER_SIDE: w for r, w in weights.items()}


def inputs(classes: int, side: int, seed: int = 0):
    """Random cross maps `[K, r, r]` and row-stochastic self maps `[r², r²]` at each grid."""
    g = torch.Generator().manual_seed(seed)
    grids = [side >> i for i in range(4)]
    cross = {r: torch.rand(classes, r, r, generator=g) for r in grids}
    selfm = {r: torch.softmax(4 * torch.randn(r * r, r * r, generator=g), dim=-1) for r in grids}
    return cross, selfm


def max_relative_error(ours: torch.Tensor, dense: torch.Tensor) -> float:
    return float(((ours - dense).abs() / dense.abs().clamp_min(1e-3)).max())


# ---------------------------------------------------------------------------- benchmark
def run(classes: int, side: int, tau: int, repeats: int) -> dict:
    cross, selfm = inputs(classes, side)
    cw, sw = scaled(default_cross_weights(), side), scaled(default_self_weights(), side)
    methods = {
        "ours": lambda: hard.refine(cross, selfm, cw, sw, tau),
        "dense": lambda: dense_refine(cross, selfm, cw, sw, tau),
    }
    results = {}
    for name, fn in methods.items():
        results[name] = {
            "time": common.timeit(fn, repeats=repeats, warmup=1),
            "peak_bytes": common.peak_allocated(fn),
        }
    ours, dense = methods["ours"](), methods["dense"]()
    input_bytes = sum(t.numel() * t.element_size() for maps in (cross, selfm) for t in maps.values())
    return {
        "classes": classes,
        "grids": sorted(selfm),
        "tau": tau,
        "repeats": repeats,
        "input_bytes": input_bytes,
        "methods": results,
        "speedup": results["dense"]["time"]["median_s"] / results["ours"]["time"]["median_s"],
        "memory_ratio": results["dense"]["peak_bytes"] / max(1, results["ours"]["peak_bytes"]),
        "max_relative_error": max_relative_error(ours, dense),
        "max_abs_error": float((ours - dense).abs().max()),
    }


def report(res: dict) -> str:
    rows = [
        [name, m["time"]["median_s"] * 1e3, m["time"]["min_s"] * 1e3, m["peak_bytes"] / common.MB]
        for name, m in res["methods"].items()
    ]
    text = common.table(
        f"HARD, K={res['classes']}, grids {res['grids']}, τ={res['tau']} "
        f"(inputs {res['input_bytes'] / common.MB:.1f} MB, median of {res['repeats']})",
        ["method", "median ms", "min ms", "MB allocated beyond inputs (peak)"],
        rows,
    )
    text += common.table(
        "HARD: ours vs dense",
        ["speed-up", f"target ≥{TARGET_SPEEDUP:g}×", "memory ratio", f"target ≥{TARGET_MEMORY:g}×", "max rel. error", "max abs. error"],
        [[f"{res['speedup']:.1f}×", res["speedup_met"], f"{res['memory_ratio']:.1f}×", res["memory_met"],
          f"{res['max_relative_error']:.1e}", f"{res['max_abs_error']:.1e}"]],
    )
    return text


def main(argv=None) -> dict:
    args = common.parser(__doc__.splitlines()[0]).parse_args(argv)
    torch.manual_seed(0)
    if args.quick:
        res = run(classes=5, side=16, tau=2, repeats=2)
    else:
        res = run(classes=20, side=PAPER_SIDE, tau=2, repeats=5)
    res["speedup_met"] = res["speedup"] >= TARGET_SPEEDUP
    res["memory_met"] = res["memory_ratio"] >= TARGET_MEMORY
    res["machine"] = common.machine()
    res["quick"] = args.quick
    res["memory_measure"] = "peak torch allocation beyond the inputs (CUDA allocator or torch.profiler CPU memory events)"
    print(common.describe_machine(res["machine"]))
    report(res)
    common.write_json(NAME, res, args.out)
    return res


if __name__ == "__main__":
    main()

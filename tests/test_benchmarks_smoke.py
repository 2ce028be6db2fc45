"""The benchmarks run (in `--quick` mode, tiny sizes) and write the JSON they promise.

Not a timing test: it only keeps the benchmark code from rotting.
"""

import json

from benchmarks import bench_core, bench_hard, run_all


def load(out, name):
    return json.loads((out / f"{name}.json").read_text())


def test_run_all_finds_every_benchmark():
    names = run_all.modules()
    assert {"benchmarks.bench_hard", "benchmarks.bench_core", "benchmarks.bench_iterate",
            "benchmarks.bench_candidates"} <= set(names)
    assert all(n.startswith("benchmarks.bench_") for n in names)


def test_bench_hard_quick(tmp_path):
    bench_hard.main(["--quick", "--out", str(tmp_path)])
    res = load(tmp_path, "hard")
    assert {"machine", "methods", "speedup", "memory_ratio", "max_relative_error", "speedup_met", "memory_met"} <= set(res)
    for method in ("ours", "dense"):
        assert res["methods"][method]["time"]["median_s"] > 0
        assert res["methods"][method]["peak_bytes"] >= 0
    assert res["max_relative_error"] < 1e-4  # the two formulations agree


def test_bench_core_quick(tmp_path, tiny_sd_dir):
    bench_core.main(["--quick", "--out", str(tmp_path), "--tiny-checkpoint", str(tiny_sd_dir)])
    res = load(tmp_path, "core")
    assert {"machine", "settings", "gpu", "markdown"} <= set(res)
    (setting,) = res["settings"]
    assert {"model", "image_size", "load_s", "load_peak_mb", "variants"} <= set(setting)
    variants = {v["label"]: v for v in setting["variants"]}
    assert {"default", "inversion"} <= set(variants)
    for v in variants.values():
        assert set(bench_core.STAGES) | {"total"} <= set(v["seconds"])
        assert {"total", "unet"} <= set(v["peak_mb"])
        assert v["recorded_mb_per_pair"] > 0 and v["reference_mb_per_pair"] > v["recorded_mb_per_pair"]
    assert variants["inversion"]["seconds"]["inversion"] > 0 and variants["default"]["seconds"]["inversion"] == 0
    assert {"float32", "float16"} <= {v["store_dtype"] for v in variants.values()}


def test_bench_iterate_quick(tmp_path):
    from benchmarks import bench_iterate

    bench_iterate.main(["--quick", "--out", str(tmp_path)])
    res = load(tmp_path, "iterate")
    assert res["samples"] == 10 and res["ours_s"]["median_s"] > 0 and res["plain_s"]["median_s"] > 0
    assert res["pixels_equal"] > 0.999  # the fast path gives the pipeline's labels


def test_bench_eval_quick(tmp_path):
    from benchmarks import bench_eval

    bench_eval.main(["--quick", "--samples", "10", "--out", str(tmp_path)])
    res = load(tmp_path, "eval")
    assert res["sizes"] == [10, 50] and res["time_ratio"] > 0 and res["cpu_ratio"] > 0
    for n in ("10", "50"):
        assert res["memory"]["all outputs"][n]["traced_peak_bytes"] > 0
    assert set(res["times"]) == {"without extras", "with extras"}

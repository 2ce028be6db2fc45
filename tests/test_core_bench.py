"""benchmarks.bench_gpu runs (its --smoke setting, a few seconds) and writes the JSON it promises.

Not a timing test: it keeps the one prepared GPU command from rotting between GPU sessions.
"""

import json

from benchmarks import bench_gpu


def test_bench_gpu_smoke(tmp_path):
    bench_gpu.main(["--smoke", "--out", str(tmp_path)])
    res = json.loads((tmp_path / "gpu_smoke.json").read_text())
    assert res["setting"] == "smoke" and res["tflop_per_pair"] > 0
    (run,) = res["runs"]
    assert run["batch"] == 2 and run["classes"] == 3
    for key in ("bare_unet_s", "recorded_unet_s", "vae_s", "s_per_image", *bench_gpu.STAGES):
        assert run[key] >= 0, key
    assert run["recorded_unet_s"] > 0 and run["unet"] > 0 and run["images"] > 0
    assert abs(run["total"] - sum(run[s] for s in bench_gpu.STAGES)) < 1e-6 * max(1.0, run["total"]) + 1e-9
    assert run["ratio_to_bare"] > 0 and "FA-Seg vs the bare UNet" in res["markdown"]

#!/usr/bin/env bash
# One device session for the GPU work (issue 20): the GPU tests, then `benchmarks.bench_gpu`.
#
# Prepare here (needs PyPI):   make gpu-wheels        # .whl/: what the device image lacks
# Run with the device tool:    run(command="bash benchmarks/gpu_session.sh", carry=[".whl"], timeout_s=560)
#
# The device image has python3 with torch, transformers, triton, numpy, pillow and pytest but
# no diffusers or open_clip (whose BPE merges build the CLIP tokenizer offline): they travel
# as wheels. Everything lands under $OUT (the JSON after every measured variant), so a run
# stopped at its limit still returns what it measured.
set -uo pipefail
OUT=${OUT:-benchmarks/out/device}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 FIFTYONE_DO_NOT_TRACK=true
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/nvidia-smi.txt"
python3 -c "import torch, diffusers, transformers, triton; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__, 'triton', triton.__version__)" | tee "$OUT/versions.txt"
timeout 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py 2>&1 | tee "$OUT/pytest_gpu.txt"
timeout "${BENCH_TIMEOUT:-360}" python3 -m benchmarks.bench_gpu --out "$OUT" 2>&1 | tee "$OUT/bench_gpu.txt"

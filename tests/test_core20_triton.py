"""The Triton kernels of recorded self-attention (`faseg_core.triton_attention`), run in Triton's
interpreter on the CPU, against the torch path. Skipped when Triton is not importable.

`TRITON_INTERPRET=1` must be set before Triton is first imported (its own `@jit` helpers are
made then), so each check runs in a fresh Python process: this file, run as a script.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def torch_head_sum(query, key, scale, heads):
    probs = torch.baddbmm(torch.empty(query.shape[0], query.shape[1], key.shape[1]), query, key.transpose(-1, -2),
                          beta=0, alpha=scale).softmax(-1)
    return probs.unflatten(0, (-1, heads)).sum(1) * (query.shape[1] / heads)


def check_head_sums(n, d, store_dtype, input_dtype=torch.float32):
    """Key and query blocks cut at `n` (not a multiple of the tile), head widths padded to a
    power of two: written, then added, `(N / H) Σ_h softmax` as torch computes it (in float32
    from the same, possibly half-precision, queries and keys)."""
    from faseg_core import triton_attention

    g = torch.Generator().manual_seed(0)
    batch, heads = 2, 3
    query, key = (torch.randn(batch * heads, n, d, generator=g).to(input_dtype) for _ in range(2))
    expected = torch_head_sum(query.float(), key.float(), d**-0.5, heads)
    store = torch.full((batch, n, n), float("nan"), dtype=store_dtype)
    triton_attention.record_head_sum(query, key, d**-0.5, heads, store, accumulate=False)
    tol = {"rtol": 1e-5, "atol": 1e-6 * n} if store_dtype == torch.float32 else {"rtol": 1e-3, "atol": 1e-3}
    torch.testing.assert_close(store.float(), expected, **tol)
    triton_attention.record_head_sum(query, key, d**-0.5, heads, store, accumulate=True)
    torch.testing.assert_close(store.float(), 2 * expected, **tol)
    try:
        triton_attention.record_head_sum(query, key, d**-0.5, heads, store[:1], accumulate=True)
    except ValueError as e:
        assert "must be a contiguous [2," in str(e), e
    else:
        raise AssertionError("a store of the wrong shape was accepted")


def check_recorder():
    """A recorded layer (the tiny model's 16 × 16 grid) through the kernels and SDPA gives the
    torch path's output and sums, over two layers."""
    from faseg_core import attention, triton_attention
    from faseg_core.attention import SELF, AttentionRecorder
    from faseg_core.testing import build_components

    unet = build_components("tiny")["unet"]
    block = unet.down_blocks[0].attentions[0].transformer_blocks[0]
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 16 * 16, block.attn1.to_q.in_features, generator=g)
    runs = {}
    for name, kernels in (("torch", None), ("triton", triton_attention)):
        attention._triton = lambda device, kernels=kernels: kernels  # the kernels on the CPU, in the interpreter
        recorder = AttentionRecorder({16}, set(), kernel=name)
        with torch.no_grad():
            runs[name] = ([recorder(block.attn1, hidden), recorder(block.attn1, hidden * 0.5)], recorder)
    (ours, fast), (ref, slow) = runs["triton"], runs["torch"]
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5 * b.abs().max().item())
    assert fast.counts == slow.counts == {(SELF, 16): 2}
    torch.testing.assert_close(fast.mean(SELF, 16), slow.mean(SELF, 16), rtol=1e-5, atol=1e-9)


CHECKS = {
    "head_sums_f32": lambda: check_head_sums(100, 40, torch.float32),
    "head_sums_narrow": lambda: check_head_sums(64, 4, torch.float32),
    "head_sums_f16_store": lambda: check_head_sums(81, 16, torch.float16),
    # a half-precision model (fp16 on CUDA by default): fp16 queries and keys, SD's 40-wide heads
    "head_sums_f16_inputs": lambda: check_head_sums(81, 40, torch.float16, torch.float16),
    "recorder": check_recorder,
}


@pytest.mark.parametrize("check", sorted(CHECKS))
def test_kernels_in_the_interpreter_equal_the_torch_path(check):
    pytest.importorskip("triton")
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": path}
    done = subprocess.run([sys.executable, __file__, check], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert done.stdout.strip().endswith(f"{check} ok")


if __name__ == "__main__":
    CHECKS[sys.argv[1]]()
    print(f"{sys.argv[1]} ok")


def test_a_kernel_that_does_not_build_falls_back_to_torch(monkeypatch, caplog):
    """A kernel error (e.g. out of shared memory on some card) leaves the store untouched: the
    layer is recorded with torch, once warned, and torch records from then on."""
    from faseg_core import attention
    from faseg_core.attention import SELF, AttentionRecorder
    from faseg_core.testing import build_components

    class Broken:
        class KernelError(RuntimeError):
            pass

        calls = 0

        @classmethod
        def record_head_sum(cls, *args, **kwargs):
            cls.calls += 1
            raise cls.KernelError("out of resources: shared memory")

    monkeypatch.setattr(attention, "_TRITON_BROKEN", False)
    monkeypatch.setattr(attention, "_triton", lambda device: None if attention._TRITON_BROKEN else Broken)
    block = build_components("tiny")["unet"].down_blocks[0].attentions[0].transformer_blocks[0]
    hidden = torch.randn(2, 16 * 16, block.attn1.to_q.in_features, generator=torch.Generator().manual_seed(0))
    recorders = [AttentionRecorder({16}, set(), kernel=kernel) for kernel in ("triton", "torch")]
    with torch.no_grad(), caplog.at_level("WARNING", logger="faseg_core.attention"):
        fallback = [recorders[0](block.attn1, hidden), recorders[0](block.attn1, hidden * 0.5)]
        assert attention._TRITON_BROKEN is True
        plain = [recorders[1](block.attn1, hidden), recorders[1](block.attn1, hidden * 0.5)]
    assert Broken.calls == 1 and [r.levelname for r in caplog.records] == ["WARNING"]
    assert "did not build (out of resources: shared memory)" in caplog.text
    assert all(torch.equal(a, b) for a, b in zip(fallback, plain))
    assert torch.equal(recorders[0].sums[(SELF, 16)], recorders[1].sums[(SELF, 16)])

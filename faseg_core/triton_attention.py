"""Head-summed self-attention probabilities with Triton: the recorder's store, no per-head probabilities.

On CUDA, `AttentionRecorder` can record a self-attention layer with two kernels instead of
softmaxing blocks of per-head scores in torch:

- `_lse_kernel`: each query row's log-sum-exp of `scale · q·kᵀ`, per head, streaming over
  blocks of keys (online maximum and sum, as flash attention);
- `_head_sum_kernel`: each `(query block, key block)` tile of `weight · Σ_h exp(scale · q_h·k_hᵀ − lse_h)`,
  written to (or added to) the store, so the probabilities of a head exist only as a tile in
  registers; the layer's output comes from SDPA.

The scores are accumulated in float32 (`tl.dot`, IEEE precision for float32 inputs), so the
store is at least as precise as the torch path's. `available(device)` is true on CUDA when
Triton imports; the torch path stays the CPU path and the tests' reference (the tests run
these kernels in Triton's interpreter, `TRITON_INTERPRET=1`, on the CPU).
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
    from triton.errors import TritonError as KernelError  # a kernel that does not build for these shapes or this card
except ImportError:  # the torch path records everything without it
    triton = None
    KernelError = RuntimeError

TILE_BYTES = 2**15  # most bytes of one [tile rows, head width] operand tile: 64 rows up to 128 half / 64 float32 dims


def available(device: torch.device) -> bool:
    """Whether the kernels can run on `device` (CUDA, with Triton importable)."""
    return triton is not None and device.type == "cuda"


if triton is not None:

    @triton.jit
    def _lse_kernel(q_ptr, k_ptr, lse_ptr, n, d, scale,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
        """`lse[bh, i] = log Σ_j exp(scale · q[bh, i]·k[bh, j])` for a block of rows i."""
        bh = tl.program_id(0)
        rows = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
        dims = tl.arange(0, BLOCK_D)
        base = bh.to(tl.int64) * n * d
        q = tl.load(q_ptr + base + rows[:, None] * d + dims[None, :],
                    mask=(rows[:, None] < n) & (dims[None, :] < d), other=0.0)
        top = tl.full([BLOCK_M], float("-inf"), tl.float32)
        total = tl.zeros([BLOCK_M], tl.float32)
        for start in range(0, n, BLOCK_N):
            cols = start + tl.arange(0, BLOCK_N)
            k = tl.load(k_ptr + base + cols[:, None] * d + dims[None, :],
                        mask=(cols[:, None] < n) & (dims[None, :] < d), other=0.0)
            s = tl.dot(q, tl.trans(k), input_precision="ieee") * scale
            s = tl.where(cols[None, :] < n, s, float("-inf"))
            new_top = tl.maximum(top, tl.max(s, 1))
            total = total * tl.exp(top - new_top) + tl.sum(tl.exp(s - new_top[:, None]), 1)
            top = new_top
        tl.store(lse_ptr + bh.to(tl.int64) * n + rows, top + tl.log(total), mask=rows < n)

    @triton.jit
    def _head_sum_kernel(q_ptr, k_ptr, lse_ptr, out_ptr, n, d, heads, scale, weight,
                         ACCUMULATE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                         BLOCK_D: tl.constexpr):
        """`out[b, i, j] (+)= weight · Σ_h exp(scale · q[bh, i]·k[bh, j] − lse[bh, i])`, bh = b·heads + h."""
        b = tl.program_id(0)
        rows = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.program_id(2) * BLOCK_N + tl.arange(0, BLOCK_N)
        dims = tl.arange(0, BLOCK_D)
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for h in range(heads):
            bh = (b * heads + h).to(tl.int64)
            q = tl.load(q_ptr + bh * n * d + rows[:, None] * d + dims[None, :],
                        mask=(rows[:, None] < n) & (dims[None, :] < d), other=0.0)
            k = tl.load(k_ptr + bh * n * d + cols[:, None] * d + dims[None, :],
                        mask=(cols[:, None] < n) & (dims[None, :] < d), other=0.0)
            lse = tl.load(lse_ptr + bh * n + rows, mask=rows < n, other=0.0)
            acc += tl.exp(tl.dot(q, tl.trans(k), input_precision="ieee") * scale - lse[:, None])
        acc = acc * weight
        mask = (rows[:, None] < n) & (cols[None, :] < n)
        ptrs = out_ptr + b.to(tl.int64) * n * n + rows[:, None] * n + cols[None, :]
        if ACCUMULATE:
            acc += tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
        tl.store(ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask)


def record_head_sum(query: torch.Tensor, key: torch.Tensor, scale: float, heads: int, store: torch.Tensor,
                    accumulate: bool) -> None:
    """Write (or, with `accumulate`, add) `(N / heads) · Σ_h softmax(scale · q_h·k_hᵀ)` into `store`.

    Args:
        query, key: `[B*H, N, d]`, heads of an image consecutive (`Attention.head_to_batch_dim`).
        store: `[B, N, N]` float32 or half precision, contiguous.
    Raises:
        KernelError: a kernel does not build for these shapes on this card (raised before
            `store` is touched).
    """
    if triton is None:
        raise RuntimeError("Triton is not installed: record with the torch path (AttentionRecorder does so by itself)")
    query, key = query.contiguous(), key.contiguous()
    batch_heads, n, d = query.shape
    if not store.is_contiguous() or store.shape != (batch_heads // heads, n, n):
        raise ValueError(f"`store` must be a contiguous [{batch_heads // heads}, {n}, {n}] tensor, "
                         f"not {tuple(store.shape)}")
    block_d = max(16, triton.next_power_of_2(d))
    # 64 × 64 tiles, 32 × 32 for wide heads (SD's 160 dims), so the pipelined tiles fit in shared memory
    block = 64 if 64 * block_d * query.element_size() <= TILE_BYTES else 32
    lse = torch.empty(batch_heads, n, dtype=torch.float32, device=query.device)
    _lse_kernel[(batch_heads, triton.cdiv(n, block))](query, key, lse, n, d, scale,
                                                      BLOCK_M=block, BLOCK_N=block, BLOCK_D=block_d)
    grid = (batch_heads // heads, triton.cdiv(n, block), triton.cdiv(n, block))
    _head_sum_kernel[grid](query, key, lse, store, n, d, heads, scale, n / heads, ACCUMULATE=accumulate,
                           BLOCK_M=block, BLOCK_N=block, BLOCK_D=block_d)

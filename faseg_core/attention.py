"""Recording attention during one UNet pass, with diffusers attention processors.

`AttentionRecorder` is one processor instance installed on every attention layer of the
UNet. On the layers whose token grid is recorded it keeps **running sums** of head-mean
attention probabilities per `(kind, grid side)` — never a list of per-layer maps — and
computes those probabilities once per layer, a block of query rows of every image and head
at a time: a block gives the layer's output and its head sum goes to the store, so no more
than a block of per-head probabilities ever exists (`reference=True` keeps the first,
image-by-image path, which the tests compare against). The
cross-attention layers additionally score their queries against keys made from the
class prompts, which arrive cleanly through `cross_attention_kwargs={"class_embeds": e}`;
with `"class_tokens": columns` (`[B, C]` flat token positions `p * 77 + t` per latent) only
those columns are kept, the ones the readout averages into class maps.
Every other layer keeps fast (SDPA) attention. On CUDA with Triton, recorded self-attention
layers take their output from SDPA and their record from `triton_attention`'s kernels (no
per-head probabilities beyond a tile); the torch path is the CPU path and the tests' reference.
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

logger = logging.getLogger(__name__)

SELF, CROSS = "self", "cross"
CPU_CHUNK = 2**18  # probability elements per block on the CPU: a block and its softmax stay in L2
# Heads narrower than this compute a block's output as vᵀ·pᵀ (3× faster than p·v for 4- to
# 8-wide heads on one CPU core); wider heads as p·v, the reference's product (2× faster at
# SD-1.5's 40-wide heads, and the reference's rounding: a block of rows of p·v is bit for
# bit the rows of the whole product).
NARROW_HEAD = 16
# Set when a Triton kernel failed to build on this machine: a fact about the environment,
# not a setting (`FASegConfig.attention_kernel` chooses), so later recorders skip the attempt.
_TRITON_BROKEN = False
# The fewest query rows per block: MKL multiplies 1 to 3 rows with other kernels than the
# whole matrix (another rounding); blocks of 4 rows and more are bit for bit its rows.
MIN_BLOCK_ROWS = 4


class AttentionRecorder:
    r"""Attention processor that accumulates attention probabilities per grid side.

    Args:
        self_resolutions (`set[int]`): grid sides whose self-attention (`attn1`) is recorded.
        cross_resolutions (`set[int]`): grid sides whose class-prompt cross-attention
            (`attn2`) is recorded.
        store_dtype (`torch.dtype`, defaults to `torch.float32`): dtype of the self-attention
            sums, the largest buffers. Sums are kept scaled by the number of keys so that a
            float16 store holds values near 1, far from its subnormal range.
        chunk (`int`, defaults to 2**27): most probability elements materialised at once
            (on the CPU at most `CPU_CHUNK`, so that a chunk's work stays in the caches).
        reference (`bool`, defaults to `False`): record self-attention image by image, head
            chunk by head chunk, as the first implementation did (the tests' reference).
        kernel (`str`, defaults to `"torch"`): `"triton"` records self-attention with
            `faseg_core.triton_attention`'s kernels where they run (CUDA, Triton importable),
            the torch path elsewhere (`FASegConfig.attention_kernel`).

    After a UNet pass, `mean(kind, r)` gives `[B, N, N]` self-attention (rows = queries) or
    `[B, N, T]` cross-attention against the T = P * 77 class-prompt tokens (`[B, N, C]`, the
    C columns of `class_tokens`, when the pass gave them), averaged over heads and layers.
    """

    def __init__(self, self_resolutions, cross_resolutions, store_dtype=torch.float32, chunk=2**27,
                 reference: bool = False, kernel: str = "torch"):
        self.self_resolutions = set(self_resolutions)
        self.cross_resolutions = set(cross_resolutions)
        self.store_dtype = store_dtype
        self.chunk = chunk
        self.reference = reference
        self.kernel = kernel
        self.fallback = AttnProcessor2_0()
        self.sums: dict[tuple[str, int], torch.Tensor] = {}
        self.counts: dict[tuple[str, int], int] = {}

    def reset(self):
        """Free the sums of the last pass."""
        self.sums.clear()
        self.counts.clear()

    def mean(self, kind: str, r: int, rows: slice | None = None, in_place: bool = False) -> torch.Tensor:
        """Head- and layer-mean float32 attention of grid side `r` (see the class docstring).

        `rows` picks some latents of the batch, so a large self-attention store is
        converted to float32 only a few rows at a time. `in_place` divides float32 sums
        where they are (no copy; the same values), for a caller that reads each row once
        and then `reset`s the recorder.
        """
        key = (kind, r)
        if key not in self.sums:
            raise KeyError(f"no {kind}-attention was recorded at grid {r}; recorded: {sorted(self.sums)}")
        total = self.sums[key] if rows is None else self.sums[key][rows]
        scale = self.counts[key] * (total.shape[-1] if kind == SELF else 1)
        if in_place and total.dtype == torch.float32:
            return total.div_(scale)
        return total.float() / scale

    def _buffer(self, kind, r, shape, device, zeros: bool = True) -> torch.Tensor:
        """The running sum of `(kind, r)`, allocated with `shape` on first use in a pass
        (uninitialised unless `zeros`: then the first layer writes every element)."""
        key = (kind, r)
        if key not in self.sums:
            dtype = self.store_dtype if kind == SELF else torch.float32
            self.sums[key] = (torch.zeros if zeros else torch.empty)(shape, dtype=dtype, device=device)
            self.counts[key] = 0
        return self.sums[key]

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        class_embeds: torch.Tensor | None = None,
        class_tokens: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        is_cross = encoder_hidden_states is not None
        n = hidden_states.shape[1] if hidden_states.ndim == 3 else math.prod(hidden_states.shape[2:])
        r = math.isqrt(n)
        wanted = self.cross_resolutions if is_cross else self.self_resolutions
        if r * r != n or r not in wanted or (is_cross and class_embeds is None):
            return self.fallback(attn, hidden_states, encoder_hidden_states, attention_mask, temb)

        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size = hidden_states.shape[0]
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if is_cross:
            hidden_states = self._cross(attn, query, encoder_hidden_states, class_embeds, class_tokens,
                                        attention_mask, r)
        else:
            hidden_states = self._self(attn, query, hidden_states, attention_mask, r)

        hidden_states = attn.to_out[0](hidden_states)  # linear proj
        hidden_states = attn.to_out[1](hidden_states)  # dropout
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor

    def _self(self, attn, query, hidden_states, attention_mask, r):
        """Self-attention whose probabilities are computed once, a block of query rows of every
        image and head at a time: they give the output and, summed over heads, the record.

        Only the head-sum of each block is written to the store, so memory holds one block
        of per-head probabilities, and the whole layer costs one softmax of every score plus
        one read-modify-write of the store.
        """
        if self.reference or attention_mask is not None:
            return self._self_reference(attn, query, hidden_states, attention_mask, r)
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)
        query, key, value = (attn.head_to_batch_dim(t) for t in (query, key, value))  # [B*H, N, d]
        if attn.norm_q is not None:
            query, key = attn.norm_q(query), attn.norm_k(key)
        if attn.upcast_attention:
            query, key = query.float(), key.float()
        batch_heads, n, _ = query.shape
        heads = attn.heads
        batch = batch_heads // heads
        first = (SELF, r) not in self.sums  # the first layer of this grid writes its block, later ones add
        store = self._buffer(SELF, r, (batch, n, n), query.device, zeros=False)  # [B, N, N]
        kernels = _triton(query.device) if self.kernel == "triton" else None
        if kernels is not None:
            try:
                return self._self_triton(kernels, attn, query, key, value, store, first, r)
            except kernels.KernelError as e:
                _triton_failed(e)
        narrow = value.shape[-1] < NARROW_HEAD
        if narrow:  # vᵀ·pᵀ: a GEMM with a few output columns runs far faster this way round
            out = torch.empty(batch_heads, value.shape[-1], n, dtype=value.dtype, device=value.device)  # [B*H, d, N]
            value_t = value.transpose(-1, -2).contiguous()
        else:
            out = torch.empty_like(value)  # [B*H, N, d]
        chunk = self.chunk if query.device.type != "cpu" else min(self.chunk, CPU_CHUNK)
        step = max(1, chunk // (batch_heads * n))  # query rows per block, at most
        # blocks of near-equal sizes (never a short last block), each of at least MIN_BLOCK_ROWS rows
        blocks = max(1, min(-(-n // step), n // MIN_BLOCK_ROWS))
        key_t = key.transpose(-1, -2)
        for block_index in range(blocks):
            start = block_index * n // blocks
            rows = slice(start, (block_index + 1) * n // blocks)
            scores = torch.baddbmm(
                torch.empty(batch_heads, rows.stop - start, n, dtype=query.dtype, device=query.device),
                query[:, rows], key_t, beta=0, alpha=attn.scale,
            )  # [B*H, rows, N]
            probs = scores.float().softmax(dim=-1) if attn.upcast_softmax else scores.softmax(dim=-1)
            del scores
            probs = probs.to(value.dtype)
            if narrow:
                torch.bmm(value_t, probs.transpose(-1, -2), out=out[:, :, rows])
            else:
                torch.bmm(probs, value, out=out[:, rows])
            head_sum = probs.unflatten(0, (batch, heads)).sum(dim=1, dtype=torch.float32)  # [B, rows, N]
            block = store[:, rows]
            if first:
                block.copy_(head_sum.mul_(n / heads))
            elif store.dtype == torch.float32:
                block.add_(head_sum, alpha=n / heads)
            else:
                block += head_sum.mul_(n / heads).to(store.dtype)
        self.counts[(SELF, r)] += 1
        return attn.batch_to_head_dim(out.transpose(-1, -2) if narrow else out)

    def _self_triton(self, kernels, attn, query, key, value, store, first, r):
        """The record from the Triton kernels (head sums tile by tile), the output from SDPA."""
        batch_heads, n, d = query.shape
        batch = batch_heads // attn.heads
        kernels.record_head_sum(query, key, attn.scale, attn.heads, store, accumulate=not first)
        self.counts[(SELF, r)] += 1
        q, k, v = (t.reshape(batch, attn.heads, n, -1) for t in (query, key, value.to(query.dtype)))
        out = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)  # [B, H, N, d]
        return attn.batch_to_head_dim(out.reshape(batch_heads, n, -1).to(value.dtype))

    def _self_reference(self, attn, query, hidden_states, attention_mask, r):
        """Self-attention image by image and head chunk by head chunk (the reference path)."""
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)
        query, key, value = (attn.head_to_batch_dim(t) for t in (query, key, value))  # [B*H, N, d]
        if attn.norm_q is not None:
            query, key = attn.norm_q(query), attn.norm_k(key)
        batch_heads, n, _ = query.shape
        heads = attn.heads
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, n, batch_heads // heads)

        out = torch.empty_like(query)
        store = self._buffer(SELF, r, (batch_heads // heads, n, n), query.device)  # [B, N, N]
        step = max(1, min(heads, self.chunk // (n * n)))  # heads per chunk, within one image
        for b in range(batch_heads // heads):
            probs_sum = None
            for h in range(b * heads, (b + 1) * heads, step):
                sl = slice(h, min(h + step, (b + 1) * heads))
                mask = None if attention_mask is None else attention_mask[sl]
                probs = attn.get_attention_scores(query[sl], key[sl], mask)  # [h, N, N]
                out[sl] = torch.bmm(probs, value[sl])
                part = probs.sum(dim=0, dtype=torch.float32)  # [N, N]
                probs_sum = part if probs_sum is None else probs_sum.add_(part)
            if store.dtype == probs_sum.dtype:
                store[b].add_(probs_sum, alpha=n / heads)
            else:
                store[b] += probs_sum.mul_(n / heads).to(store.dtype)
        self.counts[(SELF, r)] += 1
        return attn.batch_to_head_dim(out)

    def _cross(self, attn, query, encoder_hidden_states, class_embeds, class_tokens, attention_mask, r):
        """Cross-attention: the output from the reconstruction prompt, the record from the class prompts.

        Each prompt's softmax runs over its own 77 tokens; with `class_tokens` only those
        columns are summed over heads and stored.
        """
        hidden_states = self._sdpa(attn, query, encoder_hidden_states, attention_mask)

        batch_size, prompts, tokens, _ = class_embeds.shape  # [B, P, 77, D]
        class_embeds = class_embeds.reshape(batch_size, prompts * tokens, -1).to(query.dtype)
        if attn.norm_cross:
            class_embeds = attn.norm_encoder_hidden_states(class_embeds)
        class_keys = attn.head_to_batch_dim(attn.to_k(class_embeds))  # [B*H, P*77, d]
        queries = attn.head_to_batch_dim(query)  # [B*H, N, d]
        if attn.norm_q is not None:
            queries, class_keys = attn.norm_q(queries), attn.norm_k(class_keys)
        heads = attn.heads
        batch_heads, n, _ = queries.shape
        scores = torch.baddbmm(
            torch.empty(batch_heads, n, prompts * tokens, dtype=queries.dtype, device=queries.device),
            queries, class_keys.transpose(-1, -2), beta=0, alpha=attn.scale,
        )  # [B*H, N, P*77]
        scores = scores.unflatten(-1, (prompts, tokens))
        probs = scores.float().softmax(dim=-1) if attn.upcast_softmax else scores.softmax(dim=-1)
        probs = probs.to(queries.dtype).flatten(-2).unflatten(0, (batch_size, heads))  # [B, H, N, P*77]
        if class_tokens is not None:
            columns = self._columns(class_tokens, batch_size, prompts * tokens)
            probs = probs.gather(-1, columns[:, None, None].expand(*probs.shape[:-1], columns.shape[-1]))
        probs_sum = probs.sum(dim=1, dtype=torch.float32)  # [B, N, C]
        self._buffer(CROSS, r, probs_sum.shape, probs_sum.device).add_(probs_sum / heads)
        self.counts[(CROSS, r)] += 1
        return hidden_states

    @staticmethod
    def _columns(class_tokens, batch_size, width):
        """`class_tokens` checked: `[B, C]` integer columns below `width` (P*77)."""
        if class_tokens.ndim != 2 or class_tokens.shape[0] != batch_size or class_tokens.dtype.is_floating_point:
            raise ValueError(f"`class_tokens` must be a [{batch_size}, C] integer tensor (the columns of the class "
                             f"prompts' tokens per latent), not {tuple(class_tokens.shape)} {class_tokens.dtype}")
        return class_tokens.to(torch.int64)

    @staticmethod
    def _sdpa(attn, query, encoder_hidden_states, attention_mask):
        """The layer's usual output, with fused attention (as `AttnProcessor2_0`)."""
        batch_size = query.shape[0]
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads
        q, k, v = (t.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2) for t in (query, key, value))
        if attn.norm_q is not None:
            q, k = attn.norm_q(q), attn.norm_k(k)
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, k.shape[2], batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, dropout_p=0.0, is_causal=False)
        return out.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim).to(query.dtype)


def _triton_failed(error: Exception):
    """A Triton kernel did not build: warn once, and record with the torch path from now on."""
    global _TRITON_BROKEN
    _TRITON_BROKEN = True
    logger.warning("the Triton kernels of recorded self-attention did not build (%s): recording with torch "
                   "from now on", error)


def _triton(device: torch.device):
    """`faseg_core.triton_attention` where its kernels run (CUDA, Triton importable, none
    failed to build), else None; imported on first use, so the CPU never imports Triton."""
    if _TRITON_BROKEN or device.type != "cuda":
        return None
    from . import triton_attention

    return triton_attention if triton_attention.available(device) else None


@contextmanager
def recording(unet, recorder: AttentionRecorder):
    """Install `recorder` on every attention layer of `unet`; restore the previous processors after."""
    previous = unet.attn_processors
    unet.set_attn_processor(recorder)
    try:
        yield recorder
    finally:
        unet.set_attn_processor(previous)

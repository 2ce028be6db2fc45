"""`readout.refine` gives each image what it gives that image alone, whatever the batch: HARD runs
over consecutive images with the same class count, on each image's own classes (a GEMM rounds by
its shape), in groups of latents for a half-precision store."""

import pytest
import torch

from faseg_core import FASegConfig, readout
from faseg_core.attention import CROSS, SELF, AttentionRecorder
from faseg_core.tokens import ClassPrompt

VIEWS = 2


def prompts(k):
    return [ClassPrompt("x", tuple(f"c{i}" for i in range(k)), tuple((1 + i,) for i in range(k)))]


def recorder(sums, dtype):
    """A recorder holding `sums` (copies: `refine` divides a float32 store in place), 2 layers each."""
    rec = AttentionRecorder(set(), set(), store_dtype=dtype)
    rec.sums = {key: value.clone().to(dtype if key[0] == SELF else torch.float32) for key, value in sums.items()}
    rec.counts = {key: 2 for key in sums}
    return rec


@pytest.mark.parametrize("store_dtype, chunk", [(torch.float32, 2**27), (torch.float16, 2**27), (torch.float16, 1)])
def test_each_image_refined_as_alone(store_dtype, chunk):
    cfg = FASegConfig(attention_chunk=chunk).at_image_size(128)  # grids 16/8/4/2
    counts = [3, 3, 1, 5]  # runs of 3, 1 and 5 classes
    latents, width = VIEWS * len(counts), max(counts)
    g = torch.Generator().manual_seed(0)
    sums = {(SELF, r): torch.rand(latents, r * r, r * r, generator=g) * r * r
            for r, w in cfg.self_weights.items() if w > 0}
    sums |= {(CROSS, r): torch.rand(latents, r * r, width, generator=g) for r, w in cfg.cross_weights.items() if w > 0}
    sizes = [(40, 30)] * len(counts)
    plan = readout.plan([prompts(k) for k in counts], sizes, 77, torch.device("cpu"))
    together = readout.refine(recorder(sums, store_dtype), plan, cfg, VIEWS)
    assert together.shape == (latents, width, 16, 16)
    for i, k in enumerate(counts):
        rows = slice(VIEWS * i, VIEWS * (i + 1))
        alone_sums = {key: value[rows, :, :k] if key[0] == CROSS else value[rows] for key, value in sums.items()}
        alone = readout.refine(recorder(alone_sums, store_dtype), readout.plan([prompts(k)], sizes[:1], 77,
                               torch.device("cpu")), cfg, VIEWS)
        assert torch.equal(together[rows, :k], alone), i
        assert (together[rows, k:] == 0).all()

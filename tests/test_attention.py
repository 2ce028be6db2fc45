"""The attention recorder: same outputs as diffusers' processors, correct running means."""

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

from faseg_core.attention import CROSS, SELF, AttentionRecorder, recording
from faseg_core.testing import build_components


@pytest.fixture(scope="module")
def unet():
    return build_components("tiny")["unet"]


def inputs(unet, batch=2, side=16, prompts=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    dim = unet.config.cross_attention_dim
    latents = torch.randn(batch, 4, side, side, generator=g)
    text = torch.randn(batch, 77, dim, generator=g)
    class_embeds = torch.randn(batch, prompts, 77, dim, generator=g)
    return latents, text, class_embeds


def run(unet, recorder, latents, text, class_embeds):
    with torch.no_grad(), recording(unet, recorder):
        return unet(latents, 0, encoder_hidden_states=text, cross_attention_kwargs={"class_embeds": class_embeds}).sample


def test_output_equals_diffusers_attention(unet):
    latents, text, class_embeds = inputs(unet)
    with torch.no_grad():
        unet.set_attn_processor(AttnProcessor())
        expected = unet(latents, 0, encoder_hidden_states=text).sample
    unet.set_attn_processor(AttnProcessor2_0())
    recorder = AttentionRecorder({16, 8, 4, 2}, {16, 8, 4, 2})
    out = run(unet, recorder, latents, text, class_embeds)
    assert torch.allclose(out, expected, atol=1e-5)


def test_running_means_over_layers_and_heads(unet):
    """Means equal a brute-force average of every layer's per-head probabilities."""
    latents, text, class_embeds = inputs(unet, prompts=2)
    captured = {}

    class Spy(AttnProcessor):
        """Plain diffusers attention that also keeps every layer's head-mean probabilities."""

        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                     class_embeds=None):
            is_cross = encoder_hidden_states is not None
            r = int(hidden_states.shape[1] ** 0.5)
            q = attn.head_to_batch_dim(attn.to_q(hidden_states))
            if is_cross:
                keys = attn.head_to_batch_dim(attn.to_k(class_embeds.flatten(1, 2)))
                probs = torch.cat([attn.get_attention_scores(q, keys[:, p * 77 : (p + 1) * 77]) for p in range(2)], -1)
            else:
                probs = attn.get_attention_scores(q, attn.head_to_batch_dim(attn.to_k(hidden_states)))
            captured.setdefault((CROSS if is_cross else SELF, r), []).append(probs.unflatten(0, (-1, attn.heads)).mean(1))
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)

    unet.set_attn_processor(Spy())
    with torch.no_grad():
        unet(latents, 0, encoder_hidden_states=text, cross_attention_kwargs={"class_embeds": class_embeds})
    unet.set_attn_processor(AttnProcessor2_0())

    recorder = AttentionRecorder({16, 8, 4, 2}, {16, 8, 4, 2}, chunk=300)  # tiny chunks: many slices
    run(unet, recorder, latents, text, class_embeds)
    assert set(recorder.sums) == set(captured)
    for key, maps in captured.items():
        assert recorder.counts[key] == len(maps)
        expected = torch.stack(maps).mean(0)
        # probabilities up to ~0.2 (peaked attention), summed over layers in float32
        assert torch.allclose(recorder.mean(*key), expected, rtol=0, atol=1e-5), key
    # rows of self-attention are distributions; cross rows sum to 1 per prompt
    assert torch.allclose(recorder.mean(SELF, 16).sum(-1), torch.ones(2, 256), atol=1e-5)
    assert torch.allclose(recorder.mean(CROSS, 8).sum(-1), torch.full((2, 64), 2.0), atol=1e-5)


def test_only_wanted_grids_are_recorded_and_processors_restored(unet):
    before = {k: type(v) for k, v in unet.attn_processors.items()}
    latents, text, class_embeds = inputs(unet)
    recorder = AttentionRecorder({16}, {8, 4})
    run(unet, recorder, latents, text, class_embeds)
    assert set(recorder.sums) == {(SELF, 16), (CROSS, 8), (CROSS, 4)}
    assert recorder.sums[(SELF, 16)].shape == (2, 256, 256)
    assert recorder.sums[(CROSS, 8)].shape == (2, 64, 2 * 77)
    assert {k: type(v) for k, v in unet.attn_processors.items()} == before
    recorder.reset()
    assert not recorder.sums


def test_float16_store_matches_float32(unet):
    latents, text, class_embeds = inputs(unet)
    full = AttentionRecorder({16, 8}, {8})
    half = AttentionRecorder({16, 8}, {8}, store_dtype=torch.float16)
    run(unet, full, latents, text, class_embeds)
    run(unet, half, latents, text, class_embeds)
    assert half.sums[(SELF, 16)].dtype == torch.float16
    a, b = full.mean(SELF, 16), half.mean(SELF, 16)
    assert torch.allclose(a, b, rtol=2e-3, atol=1e-6)


def test_processors_restored_after_an_error(unet):
    before = {k: type(v) for k, v in unet.attn_processors.items()}
    with pytest.raises(RuntimeError):
        with recording(unet, AttentionRecorder({16}, {8})):
            raise RuntimeError("boom")
    assert {k: type(v) for k, v in unet.attn_processors.items()} == before


def test_class_tokens_keep_only_those_columns(unet):
    """With `class_tokens` the cross store is exactly those columns of the full store (per latent),
    so recording the class columns only changes what is kept, not a value."""
    latents, text, class_embeds = inputs(unet, prompts=2)
    columns = torch.tensor([[1, 2, 80, 0], [5, 77, 153, 5]])
    full, picked = AttentionRecorder({16}, {8, 4}), AttentionRecorder({16}, {8, 4})
    run(unet, full, latents, text, class_embeds)
    with torch.no_grad(), recording(unet, picked):
        unet(latents, 0, encoder_hidden_states=text,
             cross_attention_kwargs={"class_embeds": class_embeds, "class_tokens": columns})
    for r in (8, 4):
        assert picked.sums[(CROSS, r)].shape == (2, r * r, 4)
        expected = full.mean(CROSS, r).gather(-1, columns[:, None].expand(2, r * r, 4))
        assert torch.equal(picked.mean(CROSS, r), expected), r
    assert torch.equal(picked.mean(SELF, 16), full.mean(SELF, 16))
    with pytest.raises(ValueError, match=r"`class_tokens` must be a \[2, C\] integer tensor"):
        with torch.no_grad(), recording(unet, AttentionRecorder({16}, {8})):
            unet(latents, 0, encoder_hidden_states=text,
                 cross_attention_kwargs={"class_embeds": class_embeds, "class_tokens": columns[0]})

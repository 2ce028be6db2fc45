"""Randomly initialised Stable-Diffusion-1.x-shaped checkpoints, built offline.

`save_diffusion_checkpoint(folder)` writes the four components FA-Seg loads (`unet/`,
`vae/`, `text_encoder/`, `tokenizer/`) in the Hub layout, so `FASeg.from_pretrained(folder)`
exercises the real loading code. The tokenizer is the real CLIP BPE tokenizer, derived from
the merges file that open_clip ships; the weights are random (seeded), with the UNet's
attention sharpened (`ATTENTION_SHARPNESS`).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import torch

# Shapes: "tiny" keeps SD-1.5's layout (attention at four grids, 3 cross-attention down
# blocks, 3 up blocks) with a handful of channels; "sd15" is the real size (random weights).
UNET_SHAPES = {
    "tiny": dict(block_out_channels=(8, 16, 16, 16), layers_per_block=1, cross_attention_dim=32,
                 attention_head_dim=2, norm_num_groups=4),
    "sd15": dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=768,
                 attention_head_dim=8, norm_num_groups=32),
}
VAE_SHAPES = {
    "tiny": dict(block_out_channels=(4, 4, 8, 8), layers_per_block=1, norm_num_groups=2),
    "sd15": dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32),
}
# Scale of the UNet's query and key weights (attention logits x 16). Random weights attend
# almost uniformly, so the refined maps are nearly flat and their min-max normalisation
# magnifies float32 rounding ~10^4 times; peaked attention gives maps with structure, whose
# scores differ by float32 rounding (~1e-5) between batchings, as a trained model's do.
ATTENTION_SHARPNESS = 4.0
TEXT_SHAPES = {
    "tiny": dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4),
    "sd15": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
}


def save_clip_tokenizer(folder: str | Path) -> Path:
    """Write `vocab.json` + `merges.txt` of the CLIP BPE tokenizer (as in openai/clip-vit-large-patch14)."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe
    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    byte_tokens = list(bytes_to_unicode().values())
    vocab = byte_tokens + [t + "</w>" for t in byte_tokens] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    tokenizer.save_pretrained(folder)
    return folder


def build_components(shape: str = "tiny", seed: int = 0) -> dict:
    """`{"unet", "vae", "text_encoder"}` of an SD-1.x layout with random weights."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.models.attention_processor import Attention
    from transformers import CLIPTextConfig, CLIPTextModel

    if shape not in UNET_SHAPES:
        raise ValueError(f"unknown shape {shape!r}: choose one of {sorted(UNET_SHAPES)}")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        **UNET_SHAPES[shape],
    )
    with torch.no_grad():  # peaked attention, as a trained model's (random weights attend almost uniformly)
        for module in unet.modules():
            if isinstance(module, Attention):
                module.to_q.weight.mul_(ATTENTION_SHARPNESS)
                module.to_k.weight.mul_(ATTENTION_SHARPNESS)
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        sample_size=512,
        **VAE_SHAPES[shape],
    )
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, bos_token_id=49406,
                       eos_token_id=49407, pad_token_id=49407, **TEXT_SHAPES[shape])
    )
    return {"unet": unet.eval(), "vae": vae.eval(), "text_encoder": text_encoder.eval()}


def save_diffusion_checkpoint(folder: str | Path, shape: str = "tiny", seed: int = 0) -> Path:
    """Save a random SD-1.x-layout checkpoint to `folder` (Hub layout) and return it."""
    folder = Path(folder)
    for name, module in build_components(shape, seed).items():
        module.save_pretrained(folder / name)
    save_clip_tokenizer(folder / "tokenizer")
    return folder

"""Tiny random-weight BLIP and open_clip models saved to a folder, for tests and benchmarks.

Both builders go through the real save formats, so that `Captioner.from_pretrained(folder)` and
`Tagger.from_pretrained(folder)` exercise the same loading code as real checkpoints. Nothing is
downloaded: the BLIP WordPiece vocabulary is trained here with `tokenizers`, and open_clip ships the
real CLIP BPE tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

TINY_IMAGE_SIZE = 32
TINY_PATCH_SIZE = 8

_CORPUS = [
    "a man and two dogs asleep on a couch",
    "a cat sitting on a chair next to a potted plant",
    "two trains are parked on the tracks near a building",
    "a person riding a horse in a field with sheep and cows",
    "an airplane on the tarmac at an airport",
    "a bus and a car on a street with a motorbike",
    "a bottle on a dining table in front of a tv monitor",
    "a boat on the water with a bird in the sky",
]


def build_tiny_blip(folder: str | Path, seed: int = 0) -> Path:
    """Save a tiny random `BlipForConditionalGeneration` and its `BlipProcessor` to `folder`.

    The processor resizes to `TINY_IMAGE_SIZE`; its BERT WordPiece tokenizer is trained on a few
    captions and carries BLIP's `[DEC]` bos token.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    # 1. WordPiece vocabulary trained on a toy corpus
    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    trainer = trainers.WordPieceTrainer(vocab_size=200, special_tokens=special, min_frequency=1)
    wordpiece.train_from_iterator(_CORPUS, trainer=trainer)
    tokenizer = BertTokenizer(vocab=wordpiece.get_vocab(), bos_token="[DEC]", model_max_length=64)

    # 2. processor
    image_processor = BlipImageProcessor(size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE})
    processor = BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)

    # 3. model
    hidden = 32
    config = BlipConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            encoder_hidden_size=hidden,
            intermediate_size=37,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=64,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            sep_token_id=tokenizer.sep_token_id,
            eos_token_id=tokenizer.sep_token_id,
        ),
        vision_config=dict(
            hidden_size=hidden,
            intermediate_size=37,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=TINY_IMAGE_SIZE,
            patch_size=TINY_PATCH_SIZE,
        ),
        projection_dim=hidden,
    )
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(config).eval()

    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def tiny_clip_config() -> dict:
    """An open_clip model config of the real CLIP architecture, scaled down to a few thousand weights."""
    return {
        "embed_dim": 16,
        "vision_cfg": {
            "image_size": TINY_IMAGE_SIZE,
            "layers": 3,
            "width": 32,
            "head_width": 16,
            "patch_size": TINY_PATCH_SIZE,
        },
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
    }


def build_tiny_clip(folder: str | Path, seed: int = 0) -> Path:
    """Save a tiny random open_clip CLIP to `folder` in open_clip's `local-dir:` layout.

    The folder holds `open_clip_config.json` (`model_cfg` + `preprocess_cfg`) and
    `open_clip_model.safetensors`; `open_clip.create_model("local-dir:" + folder)` loads it back.
    """
    import open_clip
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model_cfg = tiny_clip_config()

    torch.manual_seed(seed)
    model = open_clip.CLIP(**model_cfg).eval()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))

    preprocess_cfg = {
        "size": TINY_IMAGE_SIZE,
        "mean": list(open_clip.OPENAI_DATASET_MEAN),
        "std": list(open_clip.OPENAI_DATASET_STD),
    }
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    return folder

"""BLIP captioning: one caption per image, batched and deterministic."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..loading import LOAD_LOCK
from .images import batches, to_pil_list

logger = logging.getLogger(__name__)

DEFAULT_CAPTIONER = "Salesforce/blip-image-captioning-base"


@dataclass(frozen=True)
class CaptionerConfig:
    """Decoding settings of a `Captioner`.

    Args:
        max_new_tokens (`int`, *optional*, defaults to 30): longest caption, in tokens.
        num_beams (`int`, *optional*, defaults to 1): 1 decodes greedily, more runs beam search.
        repetition_penalty (`float`, *optional*, defaults to 1.0): 1.0 leaves scores unchanged.
        prompt (`str`, *optional*): a prefix for conditional captioning, e.g. `"a picture of"`.
        batch_size (`int`, *optional*, defaults to 8): images per forward pass.
    """

    max_new_tokens: int = 30
    num_beams: int = 1
    repetition_penalty: float = 1.0
    prompt: str | None = None
    batch_size: int = 8

    def __post_init__(self):
        for name in ("max_new_tokens", "num_beams", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"`{name}` has to be a positive integer but is {getattr(self, name)!r}.")
        if self.repetition_penalty <= 0:
            raise ValueError(f"`repetition_penalty` has to be positive but is {self.repetition_penalty}.")


class Captioner:
    """Caption images with BLIP (`BlipForConditionalGeneration`).

    Decoding never samples, so the same image always gets the same caption, alone or in a batch.
    Runs in float16 on CUDA and float32 on CPU unless `dtype` says otherwise.

    Example::

        captioner = Captioner.from_pretrained("Salesforce/blip-image-captioning-base")
        captioner(images)  # ["a man and two dogs asleep on a couch", ...]
    """

    def __init__(self, model, processor, config: CaptionerConfig | None = None):
        self.model = model.eval()
        self.processor = processor
        self.config = config or CaptionerConfig()

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str = DEFAULT_CAPTIONER,
        config: CaptionerConfig | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        **kwargs,
    ) -> "Captioner":
        """Load a BLIP captioning checkpoint: a Hub id or a local folder with model and processor files.

        `kwargs` go to both `from_pretrained` calls (e.g. `local_files_only=True`, `revision=...`).
        Loads hold `faseg_core.LOAD_LOCK`: one at a time per process.
        """
        from transformers import BlipForConditionalGeneration, BlipProcessor

        device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
        with LOAD_LOCK:
            processor = BlipProcessor.from_pretrained(name_or_path, **kwargs)
            model = BlipForConditionalGeneration.from_pretrained(name_or_path, dtype=dtype, **kwargs).to(device)
        logger.info("Loaded captioner %s on %s (%s).", name_or_path, device, dtype)
        return cls(model, processor, config)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def __call__(self, images) -> list[str]:
        """One caption per image (PIL images or `(H, W, C)` uint8 arrays)."""
        pil_images = to_pil_list(images)
        captions: list[str] = []
        for batch in batches(pil_images, self.config.batch_size):
            captions += self._caption_batch(batch)
        return captions

    def _caption_batch(self, images) -> list[str]:
        config = self.config
        text = [config.prompt] * len(images) if config.prompt else None
        inputs = self.processor(images=images, text=text, return_tensors="pt").to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)  # (B, 3, H, W)
        output_ids = self.model.generate(
            **inputs,
            max_new_tokens=config.max_new_tokens,
            num_beams=config.num_beams,
            repetition_penalty=config.repetition_penalty,
            do_sample=False,
        )  # (B, T)
        return [" ".join(c.split()) for c in self.processor.batch_decode(output_ids, skip_special_tokens=True)]

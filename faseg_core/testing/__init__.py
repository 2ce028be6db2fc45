"""Offline builders of small random-weight models of the real architectures, for tests and benchmarks."""

from .diffusion import build_components, save_clip_tokenizer, save_diffusion_checkpoint

__all__ = ["build_components", "save_clip_tokenizer", "save_diffusion_checkpoint"]

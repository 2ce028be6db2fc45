"""FA-Seg configuration: the paper's defaults, as data."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

# Background thresholds of the paper (Table 4; FASEG_REFERENCE.md §8).
THRESHOLDS: dict[str, float] = {"voc": 0.55, "context": 0.5, "coco_object": 0.6}
THRESHOLDS["coco"] = THRESHOLDS["coco_object"]

DTYPES = ("auto", "float32", "float16", "bfloat16")


def default_cross_weights() -> dict[int, float]:
    return {8: 0.15, 16: 0.70, 32: 0.15, 64: 0.0}


def default_self_weights() -> dict[int, float]:
    return {8: 0.1, 16: 0.1, 32: 0.5, 64: 0.3}


ATTENTION_KERNELS = ("torch", "triton")


@dataclass(frozen=True)
class FASegConfig:
    """Every knob of FA-Seg, with the paper's values as defaults.

    Args:
        image_size (`int`, defaults to 512): side of the square the image is resized to
            (PIL bicubic) before the VAE.
        cross_weights (`dict[int, float]`): weight of each attention grid resolution in
            the cross-attention fusion. Keys are token-grid sides (64 is the latent grid
            of a 512 px image).
        self_weights (`dict[int, float]`): weight of each resolution's self-attention
            refinement in HARD.
        tau (`int`, defaults to 2): power of the self-attention affinity.
        threshold (`float`, defaults to 0.55): background threshold on the refined scores.
        flip (`bool`, defaults to `True`): test-time flip (TTF).
        batch_size (`int`, defaults to 4): images per UNet call (each image is two
            latents when `flip` is on).
        dtype (`str`, defaults to `"auto"`): model precision; `"auto"` is float16 on CUDA
            and float32 elsewhere.
        store_dtype (`str`, *optional*): precision of the running attention sums.
            `None` keeps them in float32 when the model runs in float32 and in (scaled)
            float16 when it runs in half precision, which halves the largest buffer.
        vae_sample (`bool`, defaults to `True`): sample the VAE posterior with a CPU
            generator seeded `seed` per image pair, as the reference does; `False` uses
            its mean.
        seed (`int`, defaults to 0): seed of that generator.
        run_inversion (`bool`, defaults to `False`): run the reference's one-step DDIM
            inversion UNet call. With one step at t=0 it returns its input, so it is
            skipped by default (half the UNet work, same masks).
        timestep (`int`, defaults to 0): diffusion timestep of the recorded UNet pass.
        attention_chunk (`int`, defaults to 2**27): most attention-probability
            elements materialised at once in a recorded layer (bounds peak memory).
        attention_kernel (`str`, defaults to `"torch"`): how recorded self-attention is
            computed: `"torch"` (blocks of rows, every device) or `"triton"` (the fused
            kernels of `faseg_core.triton_attention`, on CUDA with Triton importable; the
            torch path elsewhere, and wherever a kernel does not build). Not measured on a
            GPU yet: leave it on `"torch"` unless `benchmarks.bench_gpu` shows a win.
        pamr (`bool`, defaults to `False`): refine the scores along the image's colour edges
            with PAMR (`faseg_core.pamr`, training-free) before thresholding. The scores a
            result carries are then the refined ones, at side `pamr_size`.
        pamr_iterations (`int`, defaults to 10): PAMR propagation steps.
        pamr_dilations (`tuple[int, ...]`, defaults to `(1, 2, 4, 8, 12, 24)`): PAMR
            neighbourhood dilations, in pixels of the `pamr_size` grid.
        pamr_size (`int`, *optional*): side PAMR runs at; `None` is `image_size // 4`
            (128 for 512 px images: twice the latent grid, compact enough to store).
        compile (`bool`, defaults to `False`): compile the VAE encoder and the UNet's
            convolution blocks with `torch.compile` (on CUDA in "reduce-overhead" mode, i.e.
            CUDA graphs) for lower batch-1 latency at fixed shapes. Compilation happens on the
            first call, in place on the model's modules, and for the UNet's blocks again for
            each new batch shape (the VAE encodes one image pair at a time: one shape).
            The recorded attention layers stay eager. Not measured on a GPU yet: leave it off
            unless `benchmarks.bench_gpu` shows a win on your card.
    """

    image_size: int = 512
    cross_weights: dict[int, float] = field(default_factory=default_cross_weights)
    self_weights: dict[int, float] = field(default_factory=default_self_weights)
    tau: int = 2
    threshold: float = 0.55
    flip: bool = True
    batch_size: int = 4
    dtype: str = "auto"
    store_dtype: str | None = None
    vae_sample: bool = True
    seed: int = 0
    run_inversion: bool = False
    timestep: int = 0
    attention_chunk: int = 2**27
    attention_kernel: str = "torch"
    pamr: bool = False
    pamr_iterations: int = 10
    pamr_dilations: tuple[int, ...] = (1, 2, 4, 8, 12, 24)
    pamr_size: int | None = None
    compile: bool = False

    def __post_init__(self):
        if self.attention_kernel not in ATTENTION_KERNELS:
            raise ValueError(f"`attention_kernel` must be one of {ATTENTION_KERNELS} but is {self.attention_kernel!r}.")
        if self.image_size <= 0 or self.image_size % 8:
            raise ValueError(f"`image_size` must be a positive multiple of 8 but is {self.image_size}.")
        for name in ("cross_weights", "self_weights"):
            weights = getattr(self, name)
            if not weights or any(int(r) != r or r <= 0 for r in weights):
                raise ValueError(f"`{name}` must map positive grid sides to weights but is {weights}.")
            if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
                raise ValueError(f"`{name}` must be >= 0 with a positive sum but is {weights}.")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"`threshold` must be in [0, 1] but is {self.threshold}.")
        if int(self.tau) != self.tau or self.tau < 1:
            raise ValueError(f"`tau` must be an integer >= 1 but is {self.tau}.")
        if self.batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1 but is {self.batch_size}.")
        if self.dtype not in DTYPES:
            raise ValueError(f"`dtype` must be one of {DTYPES} but is {self.dtype!r}.")
        if self.store_dtype not in (None, *DTYPES[1:]):
            raise ValueError(f"`store_dtype` must be None or one of {DTYPES[1:]} but is {self.store_dtype!r}.")
        if int(self.pamr_iterations) != self.pamr_iterations or self.pamr_iterations < 0:
            raise ValueError(f"`pamr_iterations` must be an integer >= 0 but is {self.pamr_iterations}.")
        if not self.pamr_dilations or any(int(d) != d or d < 1 for d in self.pamr_dilations):
            raise ValueError(f"`pamr_dilations` must be positive integers but are {self.pamr_dilations}.")
        if self.pamr_size is not None and self.pamr_size < 1:
            raise ValueError(f"`pamr_size` must be None or a positive side in pixels but is {self.pamr_size}.")

    @property
    def pamr_side(self) -> int:
        """The side PAMR runs at: `pamr_size`, else `image_size // 4`."""
        return self.pamr_size or max(1, self.image_size // 4)

    @classmethod
    def for_dataset(cls, name: str, **overrides) -> "FASegConfig":
        """The paper's configuration for a benchmark: `"voc"`, `"context"` or `"coco_object"`."""
        if name not in THRESHOLDS:
            raise ValueError(f"unknown dataset preset {name!r}: choose one of {sorted(THRESHOLDS)}")
        return cls(threshold=THRESHOLDS[name], **overrides)

    def replace(self, **changes) -> "FASegConfig":
        """A copy with some fields changed (the config is frozen)."""
        return dataclasses.replace(self, **changes)

    def at_image_size(self, image_size: int) -> "FASegConfig":
        """The same weights moved to the attention grids of another image size.

        The weights are keyed by grid side at `self.image_size`; a 128 px image has grids
        four times smaller, so `{64: .3}` becomes `{16: .3}`.
        """
        if self.image_size % image_size and image_size % self.image_size:
            raise ValueError(f"cannot rescale grids from {self.image_size} px to {image_size} px")

        def move(weights):
            moved = {r * image_size // self.image_size: w for r, w in weights.items()}
            if any(r < 1 for r in moved):
                raise ValueError(f"{image_size} px is too small for the grids {sorted(weights)}")
            return moved

        return self.replace(
            image_size=image_size,
            cross_weights=move(self.cross_weights),
            self_weights=move(self.self_weights),
        )

"""FA-Seg: segmentation read out of one pass of a pretrained diffusion UNet."""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from . import hard, readout
from .attention import CROSS, SELF, AttentionRecorder, recording
from .config import FASegConfig
from .images import as_image_list, describe, load_image, resized, to_pixels
from .loading import LOAD_LOCK
from .pamr import refine_scores
from .tokens import ClassPrompt, build_class_prompts, clean_classes, reconstruction_prompt

logger = logging.getLogger(__name__)

COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer")
READ_WORKERS = 4  # threads decoding and resizing images ahead of the UNet
PROMPT_CACHE = 256  # class lists (with captions) whose tokenized prompts a FASeg keeps
# `torch.compile` options of `config.compile`, per device type (CUDA: CUDA graphs)
COMPILE_OPTIONS = {"cuda": {"mode": "reduce-overhead", "dynamic": False}, "cpu": {"dynamic": False}}
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class FASegResult:
    """Segmentation of one image.

    Attributes:
        label_map: `(H, W)` integer array at the original image size; 0 = background,
            `i + 1` = `classes[i]`.
        scores: `(K, h, w)` float32 refined score maps in [0, 1] (h = w = latent grid side).
        classes: the classes, in order.
        prompt: the reconstruction prompt the UNet saw.
    """

    label_map: np.ndarray
    scores: np.ndarray
    classes: list[str]
    prompt: str = ""


@dataclass
class _Job:
    """One image on its way through a batch."""

    index: int
    image: object  # RGB PIL image
    classes: list[str]
    prompts: list[ClassPrompt]
    prompt: str
    pixels: np.ndarray | None = None  # the image resized for the VAE, when prepared ahead


def _placed(module, device, dtype):
    """`module` in eval mode on `device`, cast only when its dtype differs."""
    module = module.to(device)
    if module.dtype != dtype:
        module = module.to(dtype)
    return module.eval()


def _resolve_dtype(dtype, device: torch.device) -> torch.dtype:
    """`"auto"` is float16 on CUDA and float32 elsewhere; names map to torch dtypes."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return _DTYPES[dtype]


def _is_oom(error: Exception) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


class FASeg:
    r"""Training-free open-vocabulary segmentation with a Stable-Diffusion-1.x-shaped model.

    Args:
        unet (`UNet2DConditionModel`), vae (`AutoencoderKL`), text_encoder (`CLIPTextModel`),
        tokenizer (`CLIPTokenizer`): the model's components.
        config (`FASegConfig`, *optional*): the default settings of calls (paper defaults);
            a call may pass its own (`seg(..., config=...)`), which never changes this one.
        device (`str` or `torch.device`, *optional*): defaults to CUDA when available.
        dtype (`torch.dtype`, *optional*): defaults to `config.dtype` ("auto": float16 on
            CUDA, float32 elsewhere). Fixed at construction: a call's `config.dtype` is not used.

    One `FASeg` serves concurrent callers (threads): UNet passes and the text-embedding
    cache are serialised by a lock, everything else is per call. After an out-of-memory
    error a batch is retried in halves, and the size that worked becomes the most images
    per UNet pass for the rest of that call only: one caller's out-of-memory never shrinks
    another's batches.

    Example::

        seg = FASeg.from_pretrained("XCLiu/2_rectified_flow_from_sd_1_5")
        result = seg(image, ["cat", "dog", "sofa"], captions="a cat and a dog on a sofa")[0]
        result.label_map  # (H, W): 0 background, 1 cat, 2 dog, 3 sofa
        coarse = seg(image, ["cat"], config=seg.config.replace(threshold=0.4))[0]
    """

    def __init__(self, unet, vae, text_encoder, tokenizer, config: FASegConfig | None = None, device=None, dtype=None):
        from diffusers import DDIMScheduler

        self.config = config or FASegConfig()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = _resolve_dtype(self.config.dtype if dtype is None else dtype, self.device)
        self.dtype = dtype
        self.unet, self.vae, self.text_encoder = (_placed(m, self.device, dtype) for m in (unet, vae, text_encoder))
        self.tokenizer = tokenizer
        # The reference's scheduler; with one step its only timestep is 0.
        self.scheduler = DDIMScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
            clip_sample=False, set_alpha_to_one=False,
        )
        self.scheduler.set_timesteps(1)
        self._lock = threading.RLock()  # one UNet pass (attention processors) and cache update at a time
        self._text_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._prompt_cache: OrderedDict[tuple, tuple] = OrderedDict()
        self._warned_truncation = False
        self._compiled = False

    def __getstate__(self):
        # picklable (a segmenter shipped to Ray actors, `copy.deepcopy`): a lock is per process
        state = self.__dict__.copy()
        state.pop("_lock", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.RLock()

    def store_dtype(self, config: FASegConfig | None = None) -> torch.dtype:
        """Dtype of the attention sums: `config.store_dtype`, else float32 for a float32 model
        and float16 for a half-precision one."""
        store = (config or self.config).store_dtype
        return _DTYPES[store] if store else torch.float32 if self.dtype == torch.float32 else torch.float16

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, model: str | os.PathLike, config: FASegConfig | None = None, device=None,
                        dtype=None, **kwargs) -> "FASeg":
        """Load the four components FA-Seg uses from a Hub id or a local folder.

        Only `unet/`, `vae/`, `text_encoder/` and `tokenizer/` are read, so nothing unused
        (the safety checker, a custom pipeline class) is downloaded; any SD-1.x layout loads.
        `kwargs` (`revision`, `cache_dir`, `local_files_only`, `token`, ...) go to every
        `from_pretrained` call. Loads hold `faseg_core.LOAD_LOCK`: one at a time per process.
        """
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        model = os.fspath(model)
        config = config or FASegConfig()
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = _resolve_dtype(config.dtype if dtype is None else dtype, device)
        if os.path.isdir(model):
            missing = [c for c in COMPONENTS if not os.path.isdir(os.path.join(model, c))]
            if missing:
                raise FileNotFoundError(
                    f"'{model}' is not an SD-1.x checkpoint folder: it lacks {', '.join(m + '/' for m in missing)} "
                    f"(expected subfolders: {', '.join(COMPONENTS)})"
                )
        try:
            with LOAD_LOCK:
                unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet", torch_dtype=dtype, **kwargs)
                vae = AutoencoderKL.from_pretrained(model, subfolder="vae", torch_dtype=dtype, **kwargs)
                text_encoder = CLIPTextModel.from_pretrained(model, subfolder="text_encoder", dtype=dtype, **kwargs)
                tokenizer = CLIPTokenizer.from_pretrained(model, subfolder="tokenizer", model_max_length=77, **kwargs)
        except OSError as e:
            raise OSError(
                f"could not load the diffusion model '{model}': {e}\n"
                "Pass a local folder holding unet/, vae/, text_encoder/ and tokenizer/, or a Hugging Face "
                "Hub id on a machine that reaches the Hub (or with the model already in its cache and "
                "HF_HUB_OFFLINE=1)."
            ) from e
        return cls(unet, vae, text_encoder, tokenizer, config=config, device=device, dtype=dtype)

    # ------------------------------------------------------------------ inputs
    def check_inputs(self, images: list, classes, captions) -> tuple[list[list[str]], list[str | None]]:
        """Per-image class lists and captions, or a clear error."""
        n = len(images)
        if n == 0:
            raise ValueError("`images` is empty: pass a PIL image, an (H, W, C) uint8 array, a path, or a list")
        if classes is None or isinstance(classes, str):
            raise ValueError(
                f"`classes` must be a list of class names (or one list per image) but is {classes!r}: "
                "pass classes=['cat', 'dog', ...]"
            )
        classes = list(classes)
        per_image = bool(classes) and all(isinstance(c, (list, tuple)) for c in classes)
        if per_image and len(classes) != n:
            raise ValueError(f"`classes` has {len(classes)} lists for {n} images: pass one list per image")
        lists = [clean_classes(c) for c in classes] if per_image else [clean_classes(classes)] * n
        for i, names in enumerate(lists):
            if not names:
                raise ValueError(
                    f"no candidate classes for {describe(images[i], i)}: pass classes=[...] "
                    "(one list for all images or one per image), or propose them with faseg_core.candidates"
                )
        if captions is None or isinstance(captions, str):
            captions = [captions] * n
        captions = list(captions)
        if len(captions) != n:
            raise ValueError(f"`captions` has {len(captions)} entries for {n} images: pass one per image")
        for i, caption in enumerate(captions):
            if caption is not None and not isinstance(caption, str):
                raise TypeError(f"caption {i} must be a string or None, not {type(caption).__name__}")
        return lists, captions

    # ------------------------------------------------------------------ text
    @torch.no_grad()
    def encode_text(self, prompts: list[str], cache: bool = False) -> torch.Tensor:
        """`[len(prompts), 77, D]` last hidden states of the text encoder."""
        with self._lock:
            todo = [p for p in dict.fromkeys(prompts) if not (cache and p in self._text_cache)]
            fresh = {}
            if todo:
                ids = self.tokenizer(todo, padding="max_length", max_length=self.tokenizer.model_max_length,
                                     truncation=True, return_tensors="pt").input_ids.to(self.device)
                states = self.text_encoder(ids)[0]  # [n, 77, D]
                fresh = dict(zip(todo, states))
                if cache:
                    self._text_cache.update(fresh)
                    while len(self._text_cache) > 512:
                        self._text_cache.popitem(last=False)
            return torch.stack([fresh[p] if p in fresh else self._text_cache[p] for p in prompts])

    def _prepare(self, index, image, classes, caption, pixels=None) -> _Job:
        """A job: its prompts, and `image` loaded here unless `pixels` came with it (from `_read`)."""
        prompts, prompt, shortened = self._prompts(tuple(classes), caption)
        if shortened and not self._warned_truncation:
            logger.warning("caption of %s shortened so that the prompt holds every class (77 CLIP tokens)",
                           describe(image, index))
            self._warned_truncation = True
        if pixels is None:
            image = load_image(image, index)
        return _Job(index, image, classes, prompts, prompt, pixels)

    def _prompts(self, classes: tuple[str, ...], caption: str | None):
        """The class prompts of `classes` and the reconstruction prompt (and whether its caption
        was shortened), tokenized once per class list and caption (up to `PROMPT_CACHE` of
        them kept). The caller holds `self._lock`."""
        cache = self._prompt_cache
        key = (classes, caption)
        if key not in cache:
            cache[key] = (build_class_prompts(self.tokenizer, list(classes)),
                          *reconstruction_prompt(self.tokenizer, caption, ", ".join(classes)))
            while len(cache) > PROMPT_CACHE:
                cache.popitem(last=False)
        prompts, prompt, shortened = cache[key]
        return list(prompts), prompt, shortened

    @staticmethod
    def _read(index, image, size):
        """Decode and resize one image (a worker thread's part: PIL releases the GIL)."""
        image = load_image(image, index)
        return image, resized(image, size)

    # ------------------------------------------------------------------ image
    @torch.no_grad()
    def encode_images(self, images: list, config: FASegConfig | None = None) -> torch.Tensor:
        """RGB images (or their `images.resized` arrays) → `[B * V, 4, h, w]` scaled latents,
        V = 2 views (image, mirror) with `flip`.

        One image (with its mirror) per VAE call: the VAE's activations, the largest
        buffers of a pass at 512 px, do not grow with the batch, an image's latents do not
        depend on the batch it is in, and a compiled encoder sees one shape. (On a CPU core
        it is also faster than the whole batch at once: 0.63 vs 0.83 s for 4 images of the
        tests' model, the same values bit for bit.)
        """
        cfg = config or self.config
        pixels = to_pixels(images, cfg.image_size, self.device).to(self.dtype)  # [B, 3, S, S]
        noise = None
        latents = []
        for image in pixels.split(1):  # [1, 3, S, S]
            views = torch.cat([image, image.flip(-1)]) if cfg.flip else image  # [V, 3, S, S]
            # contiguous: `to_pixels` gives channels-last strides, which the convolutions round otherwise
            posterior = self.vae.encode(views.contiguous()).latent_dist
            latent = posterior.mean  # [V, 4, h, w]
            if cfg.vae_sample:
                # As the reference: each image pair samples with its own CPU generator seeded
                # `seed`, so every pair gets the same noise whatever the batch.
                if noise is None:
                    generator = torch.Generator("cpu").manual_seed(cfg.seed)
                    noise = torch.randn(latent.shape, generator=generator, dtype=latent.dtype).to(self.device)
                latent = latent + posterior.std * noise
            latents.append(latent)
        return torch.cat(latents) * self.vae.config.scaling_factor  # [B*V, 4, h, w]

    def invert(self, latents: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """The reference's one-step DDIM inversion at t=0 (an identity up to rounding)."""
        t = int(self.scheduler.timesteps[0])
        eps = self.unet(latents, t, encoder_hidden_states=text).sample
        alphas = self.scheduler.alphas_cumprod
        prev = t - self.scheduler.config.num_train_timesteps // self.scheduler.num_inference_steps
        alpha = alphas[prev] if prev >= 0 else self.scheduler.final_alpha_cumprod
        alpha_next = alphas[t]
        original = (latents - (1 - alpha) ** 0.5 * eps) / alpha**0.5
        return alpha_next**0.5 * original + (1 - alpha_next) ** 0.5 * eps

    # ------------------------------------------------------------------ call
    @torch.no_grad()
    def __call__(self, images, classes, captions=None, config: FASegConfig | None = None,
                 progress=False) -> list[FASegResult]:
        """Segment images into the given classes.

        Args:
            images: a PIL image, an `(H, W, C)` uint8 array, a path, or a list of them.
            classes: `list[str]` for all images, or `list[list[str]]`, one list per image.
            captions: `None`, one string, or one string per image. `None` makes the
                reconstruction prompt the class prompt.
            config (`FASegConfig`, *optional*): this call's settings; defaults to `self.config`.
            progress: `True` for a progress bar, or a callable `(done, total)`.
        Returns:
            one `FASegResult` per image, in order.
        """
        # 0. Check inputs
        cfg = config or self.config
        images = as_image_list(images)
        class_lists, captions = self.check_inputs(images, classes, captions)
        total = len(images)
        results: list[FASegResult] = []
        bar = None
        if progress is True:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, desc="FA-Seg")
        fitting: dict[int, int] = {}  # this call's most images per pass after an OOM (never another call's)
        starts = list(range(0, total, cfg.batch_size))
        workers = min(READ_WORKERS, total, os.cpu_count() or 1)
        with ThreadPoolExecutor(workers, thread_name_prefix="faseg-read") as pool:
            # 1. Read images: decoded and resized in worker threads, the next batch while the UNet runs
            def read(start):
                return [pool.submit(self._read, i, images[i], cfg.image_size)
                        for i in range(start, min(start + cfg.batch_size, total))]

            pending = read(starts[0])
            for n, start in enumerate(starts):
                read_batch = [f.result() for f in pending]  # raises the first unreadable image's error
                pending = read(starts[n + 1]) if n + 1 < len(starts) else []
                with self._lock:  # one batch at a time: the UNet's processors, the text cache, the tokenizer
                    jobs = [self._prepare(start + j, image, class_lists[start + j], captions[start + j], pixels)
                            for j, (image, pixels) in enumerate(read_batch)]
                    results += self._segment_fitting(jobs, cfg, fitting)
                if bar is not None:
                    bar.update(len(jobs))
                elif callable(progress):
                    progress(len(results), total)
        if bar is not None:
            bar.close()
        return results

    def _segment_fitting(self, jobs: list[_Job], cfg: FASegConfig, fitting: dict[int, int]) -> list[FASegResult]:
        """Segment jobs in UNet passes of at most the size known to fit at `cfg.image_size`
        in this call (`fitting`); on out-of-memory, halve that size (down to one image),
        remember it for the call's later batches and go on. The caller holds `self._lock`."""
        results = []
        while len(results) < len(jobs):
            size = min(len(jobs) - len(results), fitting.get(cfg.image_size, len(jobs)))
            try:
                results += self._segment(jobs[len(results) : len(results) + size], cfg)
            except (torch.OutOfMemoryError, RuntimeError) as e:
                if not _is_oom(e) or size == 1:
                    raise
                logger.warning("out of memory on a batch of %d images: going on with %d", size, size // 2)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                fitting[cfg.image_size] = size // 2
        return results

    def compile(self):
        """Compile the VAE encoder and the UNet's attention-free blocks in place (`config.compile`).

        The attention layers are left alone: their processors change with every recorded pass.
        """
        if self._compiled:
            return
        from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D

        options = COMPILE_OPTIONS.get(self.device.type, COMPILE_OPTIONS["cpu"])
        self.vae.encoder.compile(**options)
        for module in self.unet.modules():
            if isinstance(module, (ResnetBlock2D, Downsample2D, Upsample2D)):
                module.compile(**options)
        self._compiled = True

    def _segment(self, jobs: list[_Job], cfg: FASegConfig) -> list[FASegResult]:
        views = 2 if cfg.flip else 1
        if cfg.compile:
            self.compile()

        # 2. Encode prompts: the reconstruction prompt per image, the class prompts per image
        text = self.encode_text([job.prompt for job in jobs]).repeat_interleave(views, dim=0)  # [B*V, 77, D]
        width = max(len(job.prompts) for job in jobs)
        class_texts = [[p.text for p in job.prompts] + [""] * (width - len(job.prompts)) for job in jobs]
        class_embeds = self.encode_text([t for row in class_texts for t in row], cache=True)
        class_embeds = class_embeds.unflatten(0, (len(jobs), width)).repeat_interleave(views, dim=0)  # [B*V, P, 77, D]

        # 3. Encode images (+ mirror)
        latents = self.encode_images([job.image if job.pixels is None else job.pixels for job in jobs], cfg)

        # 4. One-step inversion (an identity at t=0: skipped unless asked for)
        if cfg.run_inversion:
            latents = self.invert(latents, text)

        # 5. Record attention during one UNet pass (of the class prompts, only their classes' token columns)
        sizes = [(job.image.width, job.image.height) for job in jobs]
        plan = readout.plan([job.prompts for job in jobs], sizes, self.tokenizer.model_max_length, self.device)
        recorder = AttentionRecorder(
            self_resolutions=[r for r, w in cfg.self_weights.items() if w > 0],
            cross_resolutions=[r for r, w in cfg.cross_weights.items() if w > 0],
            store_dtype=self.store_dtype(cfg),
            chunk=cfg.attention_chunk,
            kernel=cfg.attention_kernel,
        )
        with recording(self.unet, recorder):
            class_kwargs = {"class_embeds": class_embeds, "class_tokens": readout.columns(plan, views)}
            self.unet(latents, cfg.timestep, encoder_hidden_states=text, cross_attention_kwargs=class_kwargs)
        self._check_recorded(recorder, cfg)
        del latents, text, class_embeds, class_kwargs

        # 6. Refine (HARD) every view of every image, 7. unflip, 8. labels: on the device, one copy to the host
        scores = readout.refine(recorder, plan, cfg, views)  # [B*V, K, S, S]
        recorder.reset()
        scores = scores.unflatten(0, (len(jobs), views))
        scores = hard.unflip_average(scores) if cfg.flip else scores[:, 0]  # [B, K, S, S]
        if cfg.pamr:  # PAMR refines along each image's own colours: one image at a time
            scores = torch.stack([refine_scores(job.image, s, cfg.pamr_side, cfg.pamr_iterations, cfg.pamr_dilations)
                                  for job, s in zip(jobs, scores)])  # [B, K, P, P]
        labels = readout.label_maps(scores, plan, cfg.threshold, cfg.image_size)
        return [FASegResult(label_map, job_scores, list(job.classes), job.prompt)
                for job, (label_map, job_scores) in zip(jobs, readout.to_host(labels, scores, plan))]

    def _check_recorded(self, recorder: AttentionRecorder, cfg: FASegConfig):
        wanted = {(SELF, r) for r, w in cfg.self_weights.items() if w > 0}
        wanted |= {(CROSS, r) for r, w in cfg.cross_weights.items() if w > 0}
        missing = sorted(wanted - set(recorder.sums))
        if missing:
            grids = sorted({r for _, r in recorder.sums}, reverse=True)
            raise ValueError(
                f"the model has no attention at grids {sorted({r for _, r in missing})} for "
                f"image_size={cfg.image_size} (it attends at {grids}): use config.at_image_size(...) "
                "or weights keyed by the model's grids"
            )

"""CLIP multi-label tagging in the spirit of TagCLIP (Lin et al., "TagCLIP: A Local-to-Global Framework
to Enhance Open-Vocabulary Multi-Label Classification of CLIP Without Training").

Per image, with an open_clip ViT:

1. Local: the last block runs with each token attending only to itself (its value path), so patch
   tokens keep their own content; projected into the joint space, each patch gets a softmax over
   the classes plus background prompts.                                         # (B, N, C)
2. Refinement: patch-to-patch attention of the last `refine_layers` blocks before the final one,
   kept where most of those layers agree (TagCLIP's voting), spreads each patch's class
   probabilities over the patches it attends to.                                # (B, N, N) @ (B, N, C)
3. Per class, the strongest patch is the local evidence; it is averaged with the ordinary global
   (class-token) softmax.                                                       # (B, K)
4. Tags: classes scoring at least `min + relative_threshold * (max - min)` of that image, best
   first, at most `top_k`.

TagCLIP's class-wise re-identification (cropping each class's region and classifying it again) is
left out: it costs one extra forward pass per class.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .candidate import Candidate
from ..loading import LOAD_LOCK
from .images import batches, to_pil_list
from .vocabulary import Vocabulary

logger = logging.getLogger(__name__)

# The seven prompt templates the CLIP authors found best on ImageNet.
DEFAULT_TEMPLATES = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)
# Background prompts of CLIP-ES / TagCLIP: they soak up patches that show no vocabulary class.
# Any that the vocabulary itself knows (e.g. "sky" in PASCAL Context) is dropped.
DEFAULT_BACKGROUND = (
    "ground", "land", "grass", "tree", "building", "wall", "sky", "lake", "water", "river", "sea",
    "railway", "railroad", "helmet", "cloud", "house", "mountain", "ocean", "road", "rock", "street",
    "valley", "bridge",
)  # fmt: skip


@dataclass(frozen=True)
class TaggerConfig:
    """Settings of a `Tagger`.

    Args:
        templates (`tuple[str, ...]`): prompt templates with one `{}`, averaged per class.
        background (`tuple[str, ...]`): extra "no class" prompts competing in the softmax.
        local_weight (`float`, *optional*, defaults to 0.5): weight of the local score against the global one.
        relative_threshold (`float`, *optional*, defaults to 0.5): keep classes scoring at least
            `min + relative_threshold * (max - min)` of their image (TagCLIP's 0.5 for VOC and COCO).
        top_k (`int`, *optional*, defaults to 5): most tags per image; `None` for no cap.
        refine_layers (`int`, *optional*, defaults to 3): blocks before the last whose attention refines
            the patch scores; 0 turns refinement off.
        batch_size (`int`, *optional*, defaults to 8): images per forward pass.
    """

    templates: tuple[str, ...] = DEFAULT_TEMPLATES
    background: tuple[str, ...] = DEFAULT_BACKGROUND
    local_weight: float = 0.5
    relative_threshold: float = 0.5
    top_k: int | None = 5
    refine_layers: int = 3
    batch_size: int = 8

    def __post_init__(self):
        if not self.templates or any("{}" not in t for t in self.templates):
            raise ValueError(f"`templates` have to be non-empty and each contain '{{}}' but are {self.templates!r}.")
        if not 0.0 <= self.local_weight <= 1.0:
            raise ValueError(f"`local_weight` has to be in [0, 1] but is {self.local_weight}.")
        if not 0.0 <= self.relative_threshold <= 1.0:
            raise ValueError(f"`relative_threshold` has to be in [0, 1] but is {self.relative_threshold}.")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"`top_k` has to be None or at least 1 but is {self.top_k}.")
        if self.refine_layers < 0 or self.batch_size < 1:
            raise ValueError(
                f"`refine_layers` has to be >= 0 and `batch_size` >= 1 but are {self.refine_layers} and {self.batch_size}."
            )


class Tagger:
    """Tag images with classes of a vocabulary using an open_clip ViT (TagCLIP-style, training-free).

    Text embeddings of a class list are computed once per (classes, templates) and cached.

    Example::

        tagger = Tagger.from_pretrained("ViT-B-16", pretrained="openai")
        tagger(images, Vocabulary.voc())  # [[Candidate("dog", 0.61, "tagger"), ...], ...]
    """

    def __init__(self, model, preprocess, tokenizer, config: TaggerConfig | None = None):
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.config = config or TaggerConfig()
        self._text_cache: dict[tuple, torch.Tensor] = {}
        _check_architecture(model)

    @classmethod
    def from_pretrained(
        cls,
        model_name: str = "ViT-B-16",
        pretrained: str | None = "openai",
        config: TaggerConfig | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        **kwargs,
    ) -> "Tagger":
        """Load an open_clip model.

        `model_name` is an open_clip model name (`"ViT-B-16"`), an `hf-hub:`/`local-dir:` id, or a folder
        holding `open_clip_config.json` and weights (read as `local-dir:`). `pretrained` is a tag
        (`"openai"`) or a checkpoint file for a named model; it is ignored for folders.
        Images are resized to the model's square input without cropping, so no object is cut off.
        Loads hold `faseg_core.LOAD_LOCK`: one at a time per process.
        """
        import open_clip

        if Path(model_name).is_dir():
            model_name, pretrained = f"local-dir:{model_name}", None
        device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
        precision = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}[dtype]
        with LOAD_LOCK:
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=pretrained, device=device, precision=precision, image_resize_mode="squash",
                **kwargs,
            )
            tokenizer = open_clip.get_tokenizer(model_name)
        logger.info("Loaded tagger %s (%s) on %s (%s).", model_name, pretrained, device, dtype)
        return cls(model, preprocess, tokenizer, config)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    # ------------------------------------------------------------------ text
    @torch.no_grad()
    def encode_text(self, names: list[str] | tuple[str, ...]) -> torch.Tensor:
        """Unit-norm, template-averaged text embeddings of `names`, cached.  # (K, D)"""
        key = (tuple(names), self.config.templates)
        if key not in self._text_cache:
            templates = self.config.templates
            prompts = [t.format(n) for n in names for t in templates]
            embeds = torch.cat([
                self.model.encode_text(self.tokenizer(chunk).to(self.device)).float()
                for chunk in batches(prompts, 256)
            ])  # (K * T, D)
            embeds = F.normalize(embeds, dim=-1).view(len(names), len(templates), -1).mean(1)
            self._text_cache[key] = F.normalize(embeds, dim=-1)
        return self._text_cache[key]

    def clear_cache(self) -> None:
        """Forget cached text embeddings."""
        self._text_cache.clear()

    # ------------------------------------------------------------------ images
    @torch.no_grad()
    def scores(self, images, vocabulary: Vocabulary) -> torch.Tensor:
        """Per-class scores in [0, 1] for each image, in `vocabulary.names` order.  # (B, K)"""
        names = vocabulary.names
        background = [b for b in self.config.background if b not in vocabulary]
        text = torch.cat([self.encode_text(names), self.encode_text(background)]) if background else self.encode_text(names)
        out = []
        for batch in batches(to_pil_list(images), self.config.batch_size):
            pixels = torch.stack([self.preprocess(im) for im in batch]).to(self.device, self.dtype)  # (B, 3, H, W)
            global_embeds, patch_embeds, affinity = self._encode_image(pixels)
            out.append(
                tagclip_scores(
                    global_embeds, patch_embeds, text, self.model.logit_scale.exp().float(), len(names),
                    affinity=affinity, local_weight=self.config.local_weight,
                )
            )
        return torch.cat(out).clamp(0.0, 1.0)

    def __call__(self, images, vocabulary: Vocabulary) -> list[list[Candidate]]:
        """Tags of each image, best first, as `Candidate(name, confidence, "tagger")`."""
        scores = self.scores(images, vocabulary)
        names = vocabulary.names
        return [
            [Candidate(names[k], float(row[k]), "tagger") for k in keep]
            for row, keep in zip(scores, select_tags(scores, self.config.relative_threshold, self.config.top_k))
        ]

    def _encode_image(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Global embeddings # (B, D), patch embeddings # (B, N, D) and patch affinity # (B, N, N) or None."""
        visual = self.model.visual
        blocks = list(visual.transformer.resblocks)
        batch_first = getattr(visual.transformer, "batch_first", True)
        first_refine = len(blocks) - 1 - self.config.refine_layers
        x = visual._embeds(pixels)  # (B, 1 + N, W)
        attention = []
        for i, block in enumerate(blocks[:-1]):
            if i >= first_refine:
                attention.append(_attention_probs(block, x)[:, 1:, 1:])  # (B, N, N)
            x = _run_block(block, x, batch_first)
        last = blocks[-1]
        x_global = _run_block(last, x, batch_first)
        x_local = x + last.ls_1(_value_path(last, x))  # each token attends only to itself
        x_local = x_local + last.ls_2(last.mlp(last.ln_2(x_local)))
        pooled, _ = visual._pool(x_global)
        _, tokens = visual._pool(x_local)
        affinity = _vote_affinity(torch.stack(attention)) if attention else None
        return (pooled @ visual.proj).float(), (tokens @ visual.proj).float(), affinity


def tagclip_scores(
    global_embeds: torch.Tensor,
    patch_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor | float,
    num_classes: int,
    affinity: torch.Tensor | None = None,
    local_weight: float = 0.5,
) -> torch.Tensor:
    """Local-to-global class scores.

    Args:
        global_embeds: `[B, D]` image embeddings. patch_embeds: `[B, N, D]` patch embeddings.
        text_embeds: `[C, D]` unit-norm text embeddings, the first `num_classes` being classes and the
            rest background prompts. affinity: `[B, N, N]` row-stochastic patch affinity, or None.

    Returns: `[B, num_classes]` scores in [0, 1].
    """
    patch_probs = (logit_scale * F.normalize(patch_embeds, dim=-1) @ text_embeds.T).softmax(-1)  # (B, N, C)
    if affinity is not None:
        patch_probs = affinity @ patch_probs  # (B, N, C)
    local = patch_probs.amax(dim=1)[:, :num_classes]  # (B, K)
    global_ = (logit_scale * F.normalize(global_embeds, dim=-1) @ text_embeds.T).softmax(-1)[:, :num_classes]
    return local_weight * local + (1.0 - local_weight) * global_


def select_tags(scores: torch.Tensor, relative_threshold: float, top_k: int | None = None) -> list[list[int]]:
    """Class indices per image scoring at least `min + t * (max - min)`, best first, at most `top_k`.

    `scores` is `[B, K]`; every image keeps at least its best class.
    """
    low, high = scores.amin(-1, keepdim=True), scores.amax(-1, keepdim=True)
    keep = scores >= low + relative_threshold * (high - low)  # (B, K)
    order = scores.argsort(dim=-1, descending=True, stable=True)
    selected = [[int(k) for k in row_order if row_keep[k]] for row_order, row_keep in zip(order, keep)]
    return [row[:top_k] if top_k is not None else row for row in selected]


def _vote_affinity(attention: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Mean attention of `L` layers, kept where at least half the layers attend above their mean.

    `[L, B, N, N]` -> row-normalized `[B, N, N]`.
    """
    above = attention > attention.mean(dim=(-2, -1), keepdim=True)
    votes = above.sum(0) >= math.ceil(attention.shape[0] / 2)  # (B, N, N)
    affinity = attention.mean(0) * votes
    return affinity / affinity.sum(-1, keepdim=True).clamp_min(eps)


def _run_block(block, x: torch.Tensor, batch_first: bool) -> torch.Tensor:
    return block(x) if batch_first else block(x.transpose(0, 1)).transpose(0, 1)


def _attention_probs(block, x: torch.Tensor) -> torch.Tensor:
    """Head-averaged self-attention probabilities of a block for batch-first `x`.  # (B, L, L)"""
    attn = block.attn
    q, k, _ = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    b, length, width = q.shape
    heads = attn.num_heads
    q = q.view(b, length, heads, width // heads).transpose(1, 2)  # (B, H, L, d)
    k = k.view(b, length, heads, width // heads).transpose(1, 2)
    probs = (q.float() @ k.float().transpose(-1, -2) * (width // heads) ** -0.5).softmax(-1)  # (B, H, L, L)
    return probs.mean(1)


def _value_path(block, x: torch.Tensor) -> torch.Tensor:
    """A block's attention output when every token attends only to itself.  # (B, L, W)"""
    attn = block.attn
    width = attn.embed_dim
    v = F.linear(block.ln_1(x), attn.in_proj_weight[2 * width :], attn.in_proj_bias[2 * width :])
    return attn.out_proj(v)


def _check_architecture(model) -> None:
    """TagCLIP needs a ViT whose blocks use `nn.MultiheadAttention` and a class-token pool."""
    visual = getattr(model, "visual", None)
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    supported = (
        blocks is not None
        and hasattr(visual, "_embeds")
        and getattr(visual, "attn_pool", None) is None
        and getattr(visual, "proj", None) is not None
        and all(isinstance(getattr(b, "attn", None), torch.nn.MultiheadAttention) and b.attn._qkv_same_embed_dim for b in blocks)
    )
    if not supported:
        raise ValueError(
            f"`Tagger` needs an open_clip ViT with standard attention blocks and a projection (as in "
            f"ViT-B-16/openai); got a {type(visual).__name__} visual tower. Pick a plain CLIP ViT model."
        )

"""Candidate classes per image from a caption, a tagger, or both.

`propose_candidates` returns one `ImageCandidates` per image. It is a sequence of `Candidate`s and
also carries the caption it was built from, so a caller can store both (e.g. a FiftyOne layer writes
`result.caption` to a caption field and `result.names` to a classes field) without running BLIP
twice. Captions can also be passed in (`captions=[...]`), e.g. ones stored earlier.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from .candidate import Candidate
from .images import to_pil_list
from .matching import match_caption
from .vocabulary import Vocabulary

logger = logging.getLogger(__name__)

RULES = ("union", "intersection", "caption", "tagger")
FALLBACKS = ("vocabulary", "error", "empty")
CAPTION_CONFIDENCE = 1.0  # the caption names the class outright


@dataclass
class ImageCandidates(Sequence):
    """The candidates of one image (best first) and the caption they came from.

    Behaves like a `list[Candidate]`; `names` lists the class names and `caption` is the image's caption
    (`None` when no caption was used).
    """

    candidates: list[Candidate] = field(default_factory=list)
    caption: str | None = None

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.candidates]

    def __getitem__(self, index):
        return self.candidates[index]

    def __len__(self) -> int:
        return len(self.candidates)


def propose_candidates(
    images,
    vocabulary: Vocabulary,
    captioner=None,
    tagger=None,
    rule: str = "union",
    captions: Sequence[str] | None = None,
    fallback: str = "vocabulary",
) -> list[ImageCandidates]:
    """Propose candidate classes for each image.

    Args:
        images: PIL images or `(H, W, C)` uint8 arrays (may be `None` when `captions` are given and the
            rule needs no tagger).
        vocabulary (`Vocabulary`): classes to choose from; names returned are its canonical names.
        captioner (`Captioner`, *optional*): captions the images when `captions` is not given.
        tagger (`Tagger`, *optional*): tags the images over `vocabulary`.
        rule (`str`, *optional*, defaults to `"union"`): `"union"` (caption matches or tags),
            `"intersection"` (both), `"caption"` or `"tagger"` (one source only).
        captions (`list[str]`, *optional*): one caption per image, used instead of running `captioner`.
        fallback (`str`, *optional*, defaults to `"vocabulary"`): when an image gets no candidate,
            `"vocabulary"` proposes every vocabulary class (confidence 0, source "vocabulary"),
            `"error"` raises a `ValueError`, `"empty"` keeps the empty list.

    Returns:
        `list[ImageCandidates]`, one per image: candidates sorted by confidence (caption matches in
        caption order first), each with its source ("caption", "tagger" or "caption+tagger"), plus
        the caption.
    """
    # 0. check inputs
    use_caption, use_tagger = rule in ("union", "intersection", "caption"), rule in ("union", "intersection", "tagger")
    _check_inputs(vocabulary, captioner, tagger, rule, captions, fallback, use_caption, use_tagger, images)
    pil_images = to_pil_list(images) if images is not None else None
    num_images = len(captions) if captions is not None else len(pil_images)
    if pil_images is not None and len(pil_images) != num_images:
        raise ValueError(f"Got {len(pil_images)} images but {num_images} `captions`; pass one caption per image.")

    # 1. captions -> class names
    if use_caption and captions is None:
        captions = captioner(pil_images)
    caption_names = [match_caption(c, vocabulary) for c in captions] if use_caption else [[] for _ in range(num_images)]

    # 2. tags
    tags = tagger(pil_images, vocabulary) if use_tagger else [[] for _ in range(num_images)]

    # 3. combine per rule, then fall back where nothing is left
    results = []
    for i in range(num_images):
        candidates = combine(caption_names[i], tags[i], rule)
        caption = captions[i] if captions is not None else None
        if not candidates:
            candidates = _fallback(i, caption, vocabulary, fallback)
        results.append(ImageCandidates(candidates, caption))
    return results


def combine(caption_names: list[str], tags: list[Candidate], rule: str = "union") -> list[Candidate]:
    """Merge caption matches and tags under `rule`; best first, caption matches in caption order."""
    tag_confidence = {t.name: t.confidence for t in tags}
    in_caption = set(caption_names)
    merged = [
        Candidate(n, CAPTION_CONFIDENCE, "caption+tagger" if n in tag_confidence else "caption") for n in caption_names
    ] + [t for t in tags if t.name not in in_caption]
    if rule == "intersection":
        merged = [c for c in merged if c.source == "caption+tagger"]
        merged = [Candidate(c.name, tag_confidence[c.name], c.source) for c in merged]
    return sorted(merged, key=lambda c: -c.confidence)  # stable: caption order among equals


def _fallback(index: int, caption: str | None, vocabulary: Vocabulary, fallback: str) -> list[Candidate]:
    message = (
        f"Image {index} has no candidate class from vocabulary {vocabulary.name!r}"
        + (f" (caption: {caption!r})" if caption is not None else "")
    )
    if fallback == "error":
        raise ValueError(
            message + ": pass `fallback='vocabulary'` to use every class, `fallback='empty'` to keep none, "
            "or a larger vocabulary."
        )
    if fallback == "empty":
        logger.warning("%s; keeping it empty.", message)
        return []
    logger.warning("%s; proposing all %d classes.", message, len(vocabulary))
    return [Candidate(n, 0.0, "vocabulary") for n in vocabulary.names]


def _check_inputs(vocabulary, captioner, tagger, rule, captions, fallback, use_caption, use_tagger, images) -> None:
    if not isinstance(vocabulary, Vocabulary):
        raise TypeError(
            f"`vocabulary` has to be a `Vocabulary` but is {type(vocabulary).__name__}; "
            "wrap a list of names with `Vocabulary.from_names([...])`."
        )
    if rule not in RULES:
        raise ValueError(f"`rule` has to be one of {RULES} but is {rule!r}.")
    if fallback not in FALLBACKS:
        raise ValueError(f"`fallback` has to be one of {FALLBACKS} but is {fallback!r}.")
    if use_caption and captioner is None and captions is None:
        raise ValueError(f"`rule={rule!r}` needs captions: pass `captioner=Captioner.from_pretrained(...)` or `captions`.")
    if use_tagger and tagger is None:
        raise ValueError(f"`rule={rule!r}` needs tags: pass `tagger=Tagger.from_pretrained(...)`, or use `rule='caption'`.")
    if images is None and (use_tagger or captions is None):
        raise ValueError("`images` is None: pass the images (or, for `rule='caption'`, their `captions`).")
    if captions is not None and (isinstance(captions, str) or not all(isinstance(c, str) for c in captions)):
        raise TypeError("`captions` has to be a list of strings, one per image.")

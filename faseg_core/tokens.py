"""Prompts and the CLIP tokens each class name occupies.

A class prompt is the class names joined with ", ". Class names are located by
tokenizing, never by string matching, so multi-word names, names BPE splits
("aeroplane" → "aerop" + "lane") and any Unicode work. Token positions count the start
token, so position 0 is BOS: this module is the only place that knows it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)

SEPARATOR = ", "


@dataclass(frozen=True)
class ClassPrompt:
    """One CLIP prompt holding some of the classes.

    Attributes:
        text: the prompt, class names joined with ", ".
        classes: the class names it holds, in order.
        spans: for each class, the positions of its tokens in the encoded prompt (BOS = 0).
    """

    text: str
    classes: tuple[str, ...]
    spans: tuple[tuple[int, ...], ...]


def clean_classes(classes) -> list[str]:
    """Strip names and drop exact duplicates, keeping the first occurrence's order."""
    if isinstance(classes, str):
        raise TypeError(f"`classes` must be a list of names, not the string {classes!r}")
    names = []
    for name in classes:
        if not isinstance(name, str):
            raise TypeError(f"class names must be strings but got {name!r} ({type(name).__name__})")
        name = " ".join(name.split())
        if name and name not in names:
            names.append(name)
    return names


def _content_length(tokenizer) -> int:
    return tokenizer.model_max_length - 2  # BOS and EOS


def _token_spans(tokenizer, text: str, char_spans: list[tuple[int, int]]) -> list[tuple[int, ...]]:
    """Token positions (BOS = 0) covering each character span of `text`."""
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        return [
            tuple(i for i, (s, e) in enumerate(offsets) if e > s and s < end and e > start)
            for start, end in char_spans
        ]
    # Slow tokenizers: count the tokens of each prefix (CLIP splits on whitespace first).
    count = lambda s: len(tokenizer(s, add_special_tokens=False)["input_ids"])  # noqa: E731
    return [tuple(range(1 + count(text[:start]), 1 + count(text[:end]))) for start, end in char_spans]


def make_class_prompt(tokenizer, classes: list[str]) -> ClassPrompt:
    """Join `classes` into one prompt and locate each class's tokens."""
    text, char_spans = "", []
    for name in classes:
        if text:
            text += SEPARATOR
        char_spans.append((len(text), len(text) + len(name)))
        text += name
    spans = _token_spans(tokenizer, text, char_spans)
    limit = _content_length(tokenizer) + 1
    for name, span in zip(classes, spans):
        if not span or span[-1] >= limit:
            raise ValueError(f"class {name!r} does not fit in a {tokenizer.model_max_length}-token CLIP prompt")
    return ClassPrompt(text=text, classes=tuple(classes), spans=tuple(spans))


def build_class_prompts(tokenizer, classes: list[str]) -> list[ClassPrompt]:
    """Split `classes` into as few ≤ 77-token class prompts as needed; no class is dropped.

    Raises:
        ValueError: a single class name is longer than a whole prompt.
    """
    capacity = _content_length(tokenizer)
    sizes = [len(tokenizer(name, add_special_tokens=False)["input_ids"]) for name in classes]
    sep = len(tokenizer(SEPARATOR.strip(), add_special_tokens=False)["input_ids"])
    groups, current, used = [], [], 0
    for name, size in zip(classes, sizes):
        if size > capacity:
            raise ValueError(
                f"class {name!r} is {size} tokens long; a CLIP prompt holds {capacity}: shorten the name"
            )
        extra = size + (sep if current else 0)
        if current and used + extra > capacity:
            groups.append(current)
            current, used, extra = [], 0, size
        current.append(name)
        used += extra
    if current:
        groups.append(current)
    return [make_class_prompt(tokenizer, group) for group in groups]


def reconstruction_prompt(tokenizer, caption: str | None, class_text: str) -> tuple[str, bool]:
    """`"{caption} ; {classes}"`, shortening the caption (never the classes) to fit 77 tokens.

    Returns:
        the prompt and whether the caption had to be shortened.
    """
    if not caption or not caption.strip():
        return class_text, False
    capacity = _content_length(tokenizer)
    count = lambda s: len(tokenizer(s, add_special_tokens=False)["input_ids"])  # noqa: E731
    words = caption.split()
    prompt = f"{' '.join(words)} ; {class_text}"
    if count(prompt) <= capacity:
        return prompt, False
    # Drop caption words from the end; bisect on the number kept.
    lo, hi = 0, len(words)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(f"{' '.join(words[:mid])} ; {class_text}") <= capacity:
            lo = mid
        else:
            hi = mid - 1
    prompt = f"{' '.join(words[:lo])} ; {class_text}" if lo else class_text
    return prompt, True

"""The value every proposer returns: a class name, how sure, and who proposed it."""

from __future__ import annotations

from dataclasses import dataclass

SOURCES = ("caption", "tagger", "caption+tagger", "vocabulary", "user", "mask_targets", "ground_truth")


@dataclass(frozen=True)
class Candidate:
    """A candidate class of one image.

    Args:
        name (`str`): the vocabulary's canonical class name.
        confidence (`float`): in [0, 1]; 1.0 for a class the caption names, the tagger's score for a
            tag, 0.0 for a class added by the `"vocabulary"` fallback.
        source (`str`): `"caption"`, `"tagger"`, `"caption+tagger"`, `"vocabulary"` (fallback),
            `"user"` (given), `"mask_targets"` (a label field's classes) or `"ground_truth"`
            (the classes present in the image's ground truth).
    """

    name: str
    confidence: float
    source: str

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"`source` has to be one of {SOURCES} but is {self.source!r}.")
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"`confidence` has to be in [0, 1] but is {self.confidence}.")

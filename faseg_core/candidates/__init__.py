"""Candidate classes and captions per image: the inputs of FA-Seg's class and reconstruction prompts.

Two paths, both usable without FiftyOne:

- known classes: build a `Vocabulary` (`from_names`, `from_mask_targets`, `from_file`) and use it whole;
- proposed classes: `propose_candidates(images, vocabulary, captioner=..., tagger=...)` matches a
  BLIP caption against the vocabulary (`match_caption`) and adds TagCLIP-style CLIP tags (`Tagger`).

The paper's per-image files are read with `read_protocol_candidates` / `read_protocol_captions`.
`transformers` and `open_clip` are imported only when a model is loaded.
"""

from .candidate import Candidate
from .captioner import Captioner, CaptionerConfig
from .matching import match_caption, split_class_string
from .propose import ImageCandidates, combine, propose_candidates
from .protocol import parse_class_string, protocol_vocabulary, read_protocol_candidates, read_protocol_captions
from .tagger import Tagger, TaggerConfig, select_tags, tagclip_scores
from .vocabulary import Vocabulary

__all__ = [
    "Candidate",
    "Captioner",
    "CaptionerConfig",
    "ImageCandidates",
    "Tagger",
    "TaggerConfig",
    "Vocabulary",
    "combine",
    "match_caption",
    "parse_class_string",
    "propose_candidates",
    "protocol_vocabulary",
    "read_protocol_candidates",
    "read_protocol_captions",
    "select_tags",
    "split_class_string",
    "tagclip_scores",
]

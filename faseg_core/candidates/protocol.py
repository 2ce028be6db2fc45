"""Readers for the FA-Seg paper's per-image JSON files (candidate classes, captions, ground truth).

The files map an image id to one string. Candidate and ground-truth files hold class names
separated by single spaces, where multi-word names keep their inner space
(`"person dining table tv monitor"`), so they are split against a vocabulary, longest name first.
The files are reference data: read them from a path the user gives, never ship them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .matching import split_class_string
from .vocabulary import BUILTIN_VOCABULARIES, Vocabulary

logger = logging.getLogger(__name__)


def read_protocol_json(path: str | Path) -> dict[str, str]:
    """Read `{image_id: string}` from a protocol JSON file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Protocol file {str(path)!r} does not exist: pass the path of a file such as "
            "`candidate_classes_voc.json` or `caption_voc_blip1.json`."
        )
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"{str(path)!r} must hold a JSON object mapping image ids to strings.")
    return {str(k): v for k, v in data.items()}


def parse_class_string(text: str, vocabulary: Vocabulary, image_id: str | None = None, strict: bool = True) -> list[str]:
    """Canonical class names in one space-separated class string.

    With `strict`, a word that no vocabulary name covers raises a `ValueError`; otherwise it is
    logged and skipped.
    """
    names, unknown = split_class_string(text, vocabulary)
    if unknown:
        where = f" for image {image_id!r}" if image_id is not None else ""
        message = (
            f"{unknown!r}{where} in {text!r} is not a class or synonym of vocabulary {vocabulary.name!r}: "
            "pass the dataset's vocabulary (e.g. `Vocabulary.coco_object()` for COCO files), or `strict=False` "
            "to skip unknown words."
        )
        if strict:
            raise ValueError(message)
        logger.warning(message)
    return names


def read_protocol_candidates(path: str | Path, vocabulary: Vocabulary, strict: bool = True) -> dict[str, list[str]]:
    """`{image_id: [canonical class names]}` from a `candidate_classes_*.json` or `groundtruth_*_val.json` file.

    An empty string gives an empty list (COCO has a few); callers decide whether to skip those images.

    Example::

        voc = Vocabulary.voc()
        classes = read_protocol_candidates("faseg-protocol/candidate_classes_voc.json", voc)
        classes["2007_000187"]  # ["person", "dining table", "tv monitor", "bottle"]
    """
    entries = read_protocol_json(path)
    return {image_id: parse_class_string(text, vocabulary, image_id, strict) for image_id, text in entries.items()}


def read_protocol_captions(path: str | Path) -> dict[str, str]:
    """`{image_id: caption}` from a `caption_*_blip1.json` file (whitespace trimmed)."""
    return {image_id: " ".join(text.split()) for image_id, text in read_protocol_json(path).items()}


def protocol_vocabulary(path: str | Path) -> Vocabulary:
    """The built-in vocabulary that an FA-Seg protocol JSON file (`candidate_classes_voc.json`, ...) uses.

    The dataset is read from the file name (`voc`, `context`, `coco`); failing that, the first
    built-in vocabulary that parses every entry of the file is returned.
    """
    path = Path(path)
    entries = read_protocol_json(path)
    stem = path.stem.lower()
    keys = [k for k in ("context", "coco_object", "voc") if k.split("_")[0] in stem.split("_")]
    keys += [k for k in BUILTIN_VOCABULARIES if k not in keys]
    for key in keys:
        vocabulary = Vocabulary.builtin(key)
        try:
            for image_id, text in entries.items():
                parse_class_string(text, vocabulary, image_id=image_id)
        except ValueError:
            continue
        return vocabulary
    raise ValueError(
        f"No built-in vocabulary ({', '.join(BUILTIN_VOCABULARIES)}) covers every class name in "
        f"{str(path)!r}: build one with `Vocabulary.from_names(...)` and call `read_protocol_candidates`."
    )

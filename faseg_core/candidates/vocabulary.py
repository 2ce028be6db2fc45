"""Class vocabularies: canonical class names in order, each with its synonyms.

A vocabulary answers one question for the rest of the project: "which class does this word name?".
`Vocabulary.canonical("TV")` gives `"tv monitor"` for PASCAL VOC; caption matching, the protocol
reader and the evaluation all go through it, so a name and its synonyms mean one class everywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path

logger = logging.getLogger(__name__)

BUILTIN_VOCABULARIES = {"voc": "voc.txt", "context": "context.txt", "coco_object": "coco_object.txt"}
# Names FiftyOne and the segmentation datasets use for "no class"; never a candidate.
BACKGROUND_NAMES = frozenset({"background", "bg", "_background_", "__background__"})


def normalize_key(name: str) -> str:
    """Lookup key of a name: case-folded, `_` read as a space, whitespace collapsed."""
    return " ".join(str(name).replace("_", " ").split()).casefold()


def _clean(name: str) -> str:
    """A name as displayed: surrounding and repeated whitespace removed, everything else kept."""
    return " ".join(str(name).split())


class Vocabulary:
    """An ordered set of canonical class names, each with synonyms.

    Lookups are case-insensitive; canonical names are kept exactly as given (any language, any
    script). A name given twice, or in two casings, is one class (the first spelling wins). A synonym
    never shadows a canonical name, and a synonym claimed by two classes goes to the first one.

    Args:
        names (`Iterable[str]`):
            Canonical class names, in label order.
        synonyms (`Mapping[str, Iterable[str]]`, *optional*):
            Extra names per canonical name, e.g. `{"person": ["man", "people"]}`.
        name (`str`, *optional*):
            A label for messages and logs, e.g. `"voc"`.

    Example::

        voc = Vocabulary.voc()
        voc.canonical("Motorcycle")  # "motorbike"
        voc.names[:3]  # ["aeroplane", "bicycle", "bird"]
    """

    def __init__(
        self,
        names: Iterable[str],
        synonyms: Mapping[str, Iterable[str]] | None = None,
        name: str | None = None,
    ):
        self.name = name
        self._names: list[str] = []
        self._lookup: dict[str, str] = {}  # normalized name or synonym -> canonical name
        self._synonyms: dict[str, list[str]] = {}

        if isinstance(names, str):
            raise TypeError(f"`names` must be a list of class names, not the string {names!r}.")
        for raw in names:
            canonical = _clean(raw)
            key = normalize_key(canonical)
            if not key:
                logger.warning("Skipping an empty class name in vocabulary %r.", name)
                continue
            if key in self._lookup:
                logger.info("Merging duplicate class name %r into %r.", raw, self._lookup[key])
                continue
            self._names.append(canonical)
            self._lookup[key] = canonical
            self._synonyms[canonical] = []
        if not self._names:
            raise ValueError(
                f"`names` is empty{f' for vocabulary {name!r}' if name else ''}: a vocabulary needs at least "
                "one class name. Pass class names, e.g. `Vocabulary.from_names(['cat', 'dog'])`, or use a "
                "built-in one: `Vocabulary.voc()`, `.context()`, `.coco_object()`."
            )
        for canonical, extra in (synonyms or {}).items():
            self.add_synonyms(canonical, extra)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def voc(cls) -> "Vocabulary":
        """PASCAL VOC 2012: 20 classes, no background, with synonyms."""
        return cls._builtin("voc")

    @classmethod
    def context(cls) -> "Vocabulary":
        """PASCAL Context: the 59 classes, no background, with synonyms."""
        return cls._builtin("context")

    @classmethod
    def coco_object(cls) -> "Vocabulary":
        """COCO Object: the 80 thing classes, no background, with synonyms."""
        return cls._builtin("coco_object")

    @classmethod
    def builtin(cls, key: str) -> "Vocabulary":
        """One of the built-in vocabularies by key: `"voc"`, `"context"` or `"coco_object"`."""
        if key not in BUILTIN_VOCABULARIES:
            raise ValueError(f"Unknown built-in vocabulary {key!r}; choose one of {sorted(BUILTIN_VOCABULARIES)}.")
        return cls._builtin(key)

    @classmethod
    def _builtin(cls, key: str) -> "Vocabulary":
        text = resources.files(__package__).joinpath("data").joinpath(BUILTIN_VOCABULARIES[key]).read_text("utf-8")
        return cls.from_text(text, name=key)

    @classmethod
    def from_file(cls, path: str | Path, name: str | None = None) -> "Vocabulary":
        """Read a class file: one class per line, synonyms comma-separated, the first one canonical.

        This is the `cls_voc.txt` format of training-free segmentation code (`"person, man, woman"`).
        Blank lines and lines starting with `#` are skipped.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Vocabulary file {str(path)!r} does not exist.")
        return cls.from_text(path.read_text(encoding="utf-8"), name=name or path.stem)

    @classmethod
    def from_text(cls, text: str, name: str | None = None) -> "Vocabulary":
        """Parse the text of a class file (see `from_file`)."""
        names, synonyms = [], {}
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            terms = [t for t in (_clean(t) for t in line.split(",")) if t]
            if terms:
                names.append(terms[0])
                synonyms.setdefault(terms[0], []).extend(terms[1:])
        return cls(names, synonyms, name=name)

    @classmethod
    def from_names(
        cls,
        names: Iterable[str],
        synonyms: Mapping[str, Iterable[str]] | None = None,
        builtin_synonyms: bool = True,
        name: str | None = None,
    ) -> "Vocabulary":
        """A vocabulary from your own class names.

        With `builtin_synonyms`, a name that a built-in vocabulary knows (as a class or a synonym)
        also gets that class's other names, so `from_names(["person"])` matches "man" in captions.
        """
        vocabulary = cls(names, synonyms, name=name)
        if builtin_synonyms:
            # glued forms first ("diningtable", as VOC ground truth spells it), so no borrowed synonym takes them
            for canonical in vocabulary.names:
                vocabulary.add_synonyms(canonical, [canonical.replace(" ", "")])
            for canonical in vocabulary.names:
                vocabulary.add_synonyms(canonical, _builtin_aliases(normalize_key(canonical)))
        return vocabulary

    @classmethod
    def from_mask_targets(cls, mask_targets: Mapping, builtin_synonyms: bool = True) -> "Vocabulary":
        """A vocabulary from FiftyOne `mask_targets` (`{1: "cat", 2: "dog"}`), in label order.

        Label 0 and any class named "background" are skipped: FiftyOne reads 0 as "no label".
        """
        if not isinstance(mask_targets, Mapping):
            raise TypeError(f"`mask_targets` must be a dict like {{1: 'cat'}}, not {type(mask_targets).__name__}.")

        def order(item):
            key = item[0]
            return (0, int(key), "") if str(key).lstrip("-").isdigit() else (1, 0, str(key))

        names = [
            str(label)
            for key, label in sorted(mask_targets.items(), key=order)
            if str(key) != "0" and normalize_key(label) not in BACKGROUND_NAMES
        ]
        if not names:
            raise ValueError(
                f"`mask_targets` {dict(mask_targets)!r} holds no class besides background: add the classes to "
                "segment, e.g. `{1: 'cat', 2: 'dog'}`."
            )
        return cls.from_names(names, builtin_synonyms=builtin_synonyms, name="mask_targets")

    # ------------------------------------------------------------------ editing
    def add_synonyms(self, canonical: str, synonyms: Iterable[str]) -> None:
        """Add synonyms to a class; a synonym already taken (by any class) is skipped."""
        target = self.canonical(canonical)
        if target is None:
            raise KeyError(f"{canonical!r} is not a class of vocabulary {self.name!r}; add it to `names` first.")
        if isinstance(synonyms, str):
            synonyms = [synonyms]
        for synonym in synonyms:
            key = normalize_key(synonym)
            if not key:
                continue
            owner = self._lookup.get(key)
            if owner is None:
                self._lookup[key] = target
                self._synonyms[target].append(_clean(synonym))
            elif owner != target and normalize_key(owner) != key:
                logger.debug("Synonym %r of %r already names %r; keeping %r.", synonym, target, owner, owner)

    # ------------------------------------------------------------------ queries
    @property
    def names(self) -> list[str]:
        """Canonical class names, in order."""
        return list(self._names)

    def canonical(self, name: str) -> str | None:
        """The canonical name of a class name or synonym (case-insensitive), or `None` if unknown."""
        return self._lookup.get(normalize_key(name))

    def synonyms(self, name: str) -> list[str]:
        """The synonyms of a class (not including its canonical name)."""
        canonical = self.canonical(name)
        return [] if canonical is None else list(self._synonyms[canonical])

    def terms(self) -> dict[str, str]:
        """Every known name, normalized (`normalize_key`), mapped to its canonical name."""
        return dict(self._lookup)

    def index(self, name: str) -> int:
        """Position of a class in `names`."""
        canonical = self.canonical(name)
        if canonical is None:
            raise KeyError(f"{name!r} is not in vocabulary {self.name!r}.")
        return self._names.index(canonical)

    def to_text(self) -> str:
        """This vocabulary in the class-file format (`from_text` reads it back)."""
        return "".join(", ".join([n, *self._synonyms[n]]) + "\n" for n in self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._names))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.canonical(name) is not None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self._names == other._names and self._lookup == other._lookup

    def __repr__(self) -> str:
        head = ", ".join(self._names[:5]) + (", ..." if len(self) > 5 else "")
        return f"Vocabulary(name={self.name!r}, {len(self)} classes: {head})"


@lru_cache(maxsize=None)
def _builtin_alias_table() -> dict[str, tuple[str, ...]]:
    """normalized term -> every name of its class, over all built-in vocabularies."""
    groups = []
    for key in BUILTIN_VOCABULARIES:
        vocabulary = Vocabulary._builtin(key)
        groups += [(canonical, *vocabulary.synonyms(canonical)) for canonical in vocabulary.names]
    table: dict[str, tuple[str, ...]] = {}
    for group in groups:  # a term's own class first ("table" -> Context's table, not VOC's dining table)
        table.setdefault(normalize_key(group[0]), group)
    for group in groups:
        for term in group[1:]:
            table.setdefault(normalize_key(term), group)
    return table


def _builtin_aliases(key: str) -> tuple[str, ...]:
    return _builtin_alias_table().get(key, ())


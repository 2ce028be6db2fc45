"""Caption -> classes: find the vocabulary's class names (and synonyms, and plurals) in free text.

Matching works on words. A caption is split into words; every vocabulary term (a canonical name or
a synonym) is a tuple of words. At each position the longest term that matches wins, so "dining
table" beats "table" and "hot dog" beats "dog". A word matches a term word as written or in its
singular form ("dogs" -> "dog", "buses" -> "bus", "shelves" -> "shelf"), and irregular plurals such as
"people" or "women" are synonyms in the vocabulary files.
"""

from __future__ import annotations

import itertools
import re
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: matching needs nothing of the class at run time
    from .vocabulary import Vocabulary

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_IRREGULAR = {"men": "man", "women": "woman", "children": "child", "mice": "mouse", "geese": "goose",
              "feet": "foot", "teeth": "tooth", "knives": "knife", "wives": "wife", "leaves": "leaf"}


def words(text: str) -> tuple[str, ...]:
    """Lower-cased words of `text` (letters and digits of any script; punctuation splits words)."""
    return tuple(_WORD.findall(text.casefold()))


def singular_forms(word: str) -> tuple[str, ...]:
    """Possible singulars of an English word, most likely first; `()` when it does not look plural.

    A light rule set, enough for nouns in captions ("dogs", "buses", "houses", "ponies",
    "shelves", "knives", "men"), never a dictionary lookup: both "hous" and "house" come out
    of "houses", and only the one that is a vocabulary term can match.
    """
    if word in _IRREGULAR:
        return (_IRREGULAR[word],)
    if len(word) <= 3 or not word.endswith("s") or word.endswith(("ss", "us", "is")):
        return ()
    forms = []
    if word.endswith("ies"):
        forms.append(word[:-3] + "y")
    if word.endswith("ves"):
        forms += [word[:-3] + "f", word[:-3] + "fe"]
    if word.endswith("es"):
        forms.append(word[:-2])
    forms.append(word[:-1])
    return tuple(forms)


def _forms(term: tuple[str, ...]) -> list[tuple[str, ...]]:
    """A word tuple as written, then with singular forms of its words (each word as written or singular)."""
    options = [(w, *singular_forms(w)) for w in term]
    return [term] + [f for f in itertools.product(*options) if f != term]


@lru_cache(maxsize=32)
def _term_index(terms: tuple[tuple[str, str], ...]) -> tuple[dict[tuple[str, ...], str], int]:
    """(word tuple -> canonical, longest term in words) for `Vocabulary.terms()` items."""
    index: dict[tuple[str, ...], str] = {}
    for key, canonical in terms:  # exact spellings first: they win over singular forms
        index.setdefault(words(key), canonical)
    for key, canonical in terms:
        for form in _forms(words(key))[1:]:
            index.setdefault(form, canonical)
    index.pop((), None)
    return index, max((len(t) for t in index), default=0)


def _index(vocabulary: Vocabulary) -> tuple[dict[tuple[str, ...], str], int]:
    return _term_index(tuple(vocabulary.terms().items()))


def match_caption(caption: str, vocabulary: Vocabulary) -> list[str]:
    """Canonical class names mentioned in `caption`, in order of first mention, without duplicates.

    Example::

        match_caption("a man and two dogs asleep on a couch", Vocabulary.voc())
        # ["person", "dog", "sofa"]
    """
    if not isinstance(caption, str):
        raise TypeError(f"`caption` must be a string, not {type(caption).__name__}.")
    index, longest = _index(vocabulary)
    lookup = lambda span: next((index[f] for f in _forms(span) if f in index), None)  # noqa: E731
    found, _ = _longest_matches(words(caption), lookup, longest)
    return found


def split_class_string(text: str, vocabulary: Vocabulary) -> tuple[list[str], list[str]]:
    """Split space-separated class names (`"person dining table tv monitor"`) longest name first.

    Only exact names and synonyms are read (no plural forms). Returns the canonical names, in order
    and without duplicates, and the words that no vocabulary term covers.
    """
    terms = {words(key): canonical for key, canonical in vocabulary.terms().items()}
    return _longest_matches(words(text), terms.get, max(len(t) for t in terms))


def _longest_matches(tokens, lookup, longest: int) -> tuple[list[str], list[str]]:
    """Scan `tokens` left to right taking the longest span `lookup` knows (a canonical name or
    None); returns the names found (in order, without duplicates) and the words left over."""
    found, unknown = [], []
    i = 0
    while i < len(tokens):
        for n in range(min(longest, len(tokens) - i), 0, -1):
            canonical = lookup(tokens[i : i + n])
            if canonical is not None:
                if canonical not in found:
                    found.append(canonical)
                i += n
                break
        else:
            unknown.append(tokens[i])
            i += 1
    return found, unknown


__all__ = ["match_caption", "split_class_string", "singular_forms", "words"]

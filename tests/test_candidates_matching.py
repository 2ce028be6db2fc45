"""Caption -> classes: plurals, synonyms, multi-word names, order and duplicates."""

import pytest

from faseg_core.candidates import Vocabulary, match_caption
from faseg_core.candidates.matching import singular_forms, split_class_string

VOC = Vocabulary.voc()


@pytest.mark.parametrize(
    "caption, expected",
    [
        ("a man and two dogs asleep on a couch", ["person", "dog", "sofa"]),
        ("People sitting at a dining table with a TV", ["person", "dining table", "tv monitor"]),
        ("a jet and two planes at the airport", ["aeroplane"]),
        ("two buses and three motorcycles", ["bus", "motorbike"]),
        ("potted plants next to a sofa and a cat", ["potted plant", "sofa", "cat"]),
        ("women and children riding ponies", ["person", "horse"]),
        ("a dog chasing a dog", ["dog"]),
        ("an empty road at night", []),
        ("a tv-monitor on a table", ["tv monitor", "dining table"]),
    ],
)
def test_match_caption_voc(caption, expected):
    assert match_caption(caption, VOC) == expected


def test_longest_match_first():
    context = Vocabulary.context()
    assert match_caption("a dining table and a table", context) == ["table"]  # synonym of Context's table
    assert match_caption("a table and a potted plant", Vocabulary.from_names(["table", "plant", "potted plant"])) == [
        "table", "potted plant",
    ]
    coco = Vocabulary.coco_object()
    assert match_caption("a hot dog next to a dog", coco) == ["hot dog", "dog"]
    assert match_caption("a boy with a baseball bat and baseball gloves", coco) == ["person", "baseball bat", "baseball glove"]


def test_plural_forms_match_but_look_alikes_do_not():
    coco = Vocabulary.coco_object()
    assert match_caption("three wine glasses and knives", coco) == ["wine glass", "knife"]
    assert match_caption("a man wearing glasses", coco) == ["person"]
    assert match_caption("shelves full of books", Vocabulary.context()) == ["shelves", "book"]
    assert match_caption("a shelf", Vocabulary.context()) == ["shelves"]


def test_user_vocabulary_in_other_languages():
    vocabulary = Vocabulary.from_names(["chat", "chien", "Zebrastreifen"])
    assert match_caption("Un chat et deux chiens", vocabulary) == ["chat", "chien"]
    assert match_caption("ein ZEBRASTREIFEN", vocabulary) == ["Zebrastreifen"]


def test_singular_forms():
    assert singular_forms("dogs") == ("dog",)
    assert "bus" in singular_forms("buses") and "house" in singular_forms("houses")
    assert "pony" in singular_forms("ponies") and "shelf" in singular_forms("shelves")
    assert singular_forms("glass") == () and singular_forms("bus") == ()
    assert singular_forms("men") == ("man",)


def test_split_class_string_reports_unknown_words():
    assert split_class_string("tv monitor cat giraffe", VOC) == (["tv monitor", "cat"], ["giraffe"])


def test_match_caption_rejects_non_strings():
    with pytest.raises(TypeError, match="`caption` must be a string"):
        match_caption(None, VOC)

"""Vocabularies and the FA-Seg protocol readers: built-ins, user lists, mask_targets, class files, JSON."""

import json
from pathlib import Path

import pytest

from faseg_core.candidates import Vocabulary, protocol_vocabulary, read_protocol_candidates, read_protocol_captions

SHARED = Path(__file__).resolve().parents[2] / "shared"
PROTOCOL = SHARED / "data" / "faseg-protocol"


@pytest.mark.parametrize(
    "factory, size, first, last",
    [
        (Vocabulary.voc, 20, "aeroplane", "tv monitor"),
        (Vocabulary.context, 59, "aeroplane", "wood"),
        (Vocabulary.coco_object, 80, "person", "toothbrush"),
    ],
)
def test_builtin_sizes_and_order(factory, size, first, last):
    vocabulary = factory()
    assert len(vocabulary) == size == len(set(vocabulary.names))
    assert vocabulary.names[0] == first and vocabulary.names[-1] == last
    assert list(vocabulary) == vocabulary.names
    assert "background" not in vocabulary


def test_builtin_synonyms_never_collide():
    for factory in (Vocabulary.voc, Vocabulary.context, Vocabulary.coco_object):
        vocabulary = factory()
        for name in vocabulary.names:
            for synonym in vocabulary.synonyms(name):
                assert vocabulary.canonical(synonym) == name, (vocabulary.name, name, synonym)


def test_voc_canonical_names_and_synonyms():
    voc = Vocabulary.voc()
    for name in ["aeroplane", "dining table", "motorbike", "potted plant", "tv monitor"]:
        assert name in voc.names
    assert voc.canonical("TV") == "tv monitor"
    assert voc.canonical("tvmonitor") == "tv monitor"
    assert voc.canonical("Dining_Table") == "dining table"
    assert voc.canonical("  potted   plant ") == "potted plant"
    assert voc.canonical("motorcycle") == "motorbike"
    assert voc.canonical("people") == "person"
    assert voc.canonical("giraffe") is None
    assert voc.index("sofa") == 17


def test_coco_reads_voc_style_ground_truth_names():
    coco = Vocabulary.coco_object()
    assert coco.canonical("sofa") == "couch"
    assert coco.canonical("diningtable") == "dining table"
    assert coco.canonical("pottedplant") == "potted plant"
    assert coco.canonical("aeroplane") == "airplane"


def test_from_names_merges_duplicates_and_keeps_any_language():
    vocabulary = Vocabulary.from_names(["Cat", "cat", "CAT ", "chien", "猫咪", "Ōkami", ""])
    assert vocabulary.names == ["Cat", "chien", "猫咪", "Ōkami"]
    assert vocabulary.canonical("cat") == "Cat"
    assert vocabulary.canonical("ōKAMI") == "Ōkami"
    assert vocabulary.canonical("猫咪") == "猫咪"


def test_from_names_borrows_builtin_synonyms_unless_told_not_to():
    vocabulary = Vocabulary.from_names(["person", "table", "dining table"])
    assert vocabulary.canonical("women") == "person"
    assert vocabulary.canonical("table") == "table"  # a class name is never shadowed by a synonym
    assert vocabulary.canonical("diningtable") == "dining table"
    plain = Vocabulary.from_names(["person"], builtin_synonyms=False)
    assert plain.canonical("women") is None
    custom = Vocabulary.from_names(["robot"], synonyms={"robot": ["android", "droid"]})
    assert custom.canonical("Droid") == "robot"


def test_empty_vocabulary_is_a_clear_error():
    with pytest.raises(ValueError, match="`names` is empty"):
        Vocabulary.from_names([])
    with pytest.raises(ValueError, match="`names` is empty"):
        Vocabulary.from_names(["", "  "])
    with pytest.raises(TypeError, match="list of class names"):
        Vocabulary.from_names("cat")


def test_from_mask_targets_skips_background_and_sorts_labels():
    vocabulary = Vocabulary.from_mask_targets({0: "background", 2: "dog", 1: "cat", "3": "tv", 10: "Background"})
    assert vocabulary.names == ["cat", "dog", "tv"]
    assert vocabulary.canonical("television") == "tv"
    with pytest.raises(ValueError, match="no class besides background"):
        Vocabulary.from_mask_targets({0: "background"})
    with pytest.raises(TypeError, match="mask_targets"):
        Vocabulary.from_mask_targets(["cat"])


def test_from_file_reads_cls_voc_format(tmp_path):
    path = tmp_path / "cls_custom.txt"
    path.write_text("# my classes\nperson, man,woman\n\nsky\nTraffic Light , stoplight\nsky, heaven\n", encoding="utf-8")
    vocabulary = Vocabulary.from_file(path)
    assert vocabulary.names == ["person", "sky", "Traffic Light"]
    assert vocabulary.name == "cls_custom"
    assert vocabulary.canonical("WOMAN") == "person"
    assert vocabulary.canonical("stoplight") == "Traffic Light"
    assert vocabulary.canonical("heaven") == "sky"  # the duplicate line's synonyms join the first
    assert Vocabulary.from_text(vocabulary.to_text()) == vocabulary
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Vocabulary.from_file(tmp_path / "missing.txt")


def _write(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_protocol_candidates_split_longest_name_first(tmp_path):
    path = _write(
        tmp_path,
        "candidate_classes_voc.json",
        {"a": "person dining table tv monitor bottle", "b": "potted plant", "c": "", "d": "tvmonitor diningtable dog dog"},
    )
    classes = read_protocol_candidates(path, Vocabulary.voc())
    assert classes == {
        "a": ["person", "dining table", "tv monitor", "bottle"],
        "b": ["potted plant"],
        "c": [],
        "d": ["tv monitor", "dining table", "dog"],
    }


def test_protocol_candidates_multiword_coco_names(tmp_path):
    path = _write(tmp_path, "x.json", {"1": "baseball bat baseball glove hot dog dog cell phone"})
    assert read_protocol_candidates(path, Vocabulary.coco_object())["1"] == [
        "baseball bat", "baseball glove", "hot dog", "dog", "cell phone",
    ]


def test_protocol_unknown_word_names_the_image(tmp_path):
    path = _write(tmp_path, "x.json", {"img_7": "person giraffe"})
    with pytest.raises(ValueError, match=r"\['giraffe'\] for image 'img_7'"):
        read_protocol_candidates(path, Vocabulary.voc())
    assert read_protocol_candidates(path, Vocabulary.voc(), strict=False) == {"img_7": ["person"]}


def test_protocol_captions_and_bad_files(tmp_path):
    path = _write(tmp_path, "caption_voc_blip1.json", {"a": "  two dogs  on a couch ", "b": "a cat"})
    assert read_protocol_captions(path) == {"a": "two dogs on a couch", "b": "a cat"}
    with pytest.raises(ValueError, match="mapping image ids to strings"):
        read_protocol_captions(_write(tmp_path, "bad.json", ["a"]))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_protocol_captions(tmp_path / "nope.json")


def test_protocol_vocabulary_picks_the_dataset(tmp_path):
    assert protocol_vocabulary(_write(tmp_path, "candidate_classes_coco.json", {"1": "person"})).name == "coco_object"
    assert protocol_vocabulary(_write(tmp_path, "candidate_classes_context.json", {"1": "sky"})).name == "context"
    # no dataset in the name: the first built-in that reads every entry
    assert protocol_vocabulary(_write(tmp_path, "mine.json", {"1": "sky tv monitor"})).name == "context"
    with pytest.raises(ValueError, match="No built-in vocabulary"):
        protocol_vocabulary(_write(tmp_path, "odd.json", {"1": "spaceship"}))


@pytest.mark.skipif(not PROTOCOL.is_dir(), reason="../shared/data/faseg-protocol is absent")
def test_real_voc_protocol_files_parse_into_the_voc_vocabulary():
    voc = Vocabulary.voc()
    candidates = read_protocol_candidates(PROTOCOL / "candidate_classes_voc.json", voc)
    truth = read_protocol_candidates(PROTOCOL / "groundtruth_voc_val.json", voc)
    captions = read_protocol_captions(PROTOCOL / "caption_voc_blip1.json")
    assert len(candidates) == len(truth) == len(captions) == 1449
    assert candidates["2007_000187"] == ["person", "dining table", "tv monitor", "bottle"]
    assert all(names and all(n in voc.names for n in names) for names in candidates.values())
    assert {n for names in truth.values() for n in names} == set(voc.names)
    assert protocol_vocabulary(PROTOCOL / "candidate_classes_voc.json") == voc


def test_candidate_modules_import_without_a_circle():
    """Every `from .x import` of the package (module level or inside functions; annotations-only
    imports under `if TYPE_CHECKING` excluded) forms an acyclic graph."""
    import ast
    import graphlib

    import faseg_core.candidates as package

    folder = Path(package.__file__).parent
    graph = {}
    for path in folder.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        hidden = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                  for n in ast.walk(node)}
        graph[path.stem] = {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                            and node.level == 1 and node.module and id(node) not in hidden}
    assert graph["vocabulary"] == set() and "vocabulary" in graph["protocol"]
    list(graphlib.TopologicalSorter(graph).static_order())  # raises CycleError on a circle

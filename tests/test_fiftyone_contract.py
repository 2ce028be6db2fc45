"""The private FiftyOne APIs fiftyone_faseg relies on (no public equivalent in the FiftyOne
version range of pyproject.toml): each exists and behaves as we use it, so a FiftyOne upgrade
fails here first, with a message naming the modules that use it.

Replaced by public APIs: ``fous._compute_dice_score`` (evaluation.method.dice_score),
``fous._compute_accuracy_precision_recall`` (``SegmentationResults.metrics``),
``ColorScheme._fields`` (``ColorScheme.from_dict``), ``DatasetView._stages`` (the
evaluation config's ``worst_k``), ``Sample._reload_docs`` and ``_sample_collection_name``
(``Dataset.reload`` after an evaluation's writes).

:mod:`fiftyone_faseg.store`'s fast path (label documents built directly, several fields
of a sample in one update through ``Dataset._bulk_write``) is pinned against FiftyOne's
public API here too: same stored documents, same labels read back, as ``set_values``.
"""

import ast
import inspect
from pathlib import Path

import numpy as np
import pytest
from bson import ObjectId
from pymongo import UpdateOne

import fiftyone as fo
import fiftyone.core.odm as foo
import fiftyone.core.sample as fos
import fiftyone.utils.eval.segmentation as fous

import fiftyone_faseg

ROOT = Path(fiftyone_faseg.__file__).parent.parent

# every private FiftyOne name fiftyone_faseg or the operators use (test_no_other_private_name)
PRIVATE = ("_dataset", "_doc", "_sample_collection", "_bulk_write", "_merge_sample_field_schema", "_sample_doc_cls", "_get_field_doc", "_is_patches", "_is_frames",
           "_is_clips", "_is_dynamic_groups", "_is_generated", "_aggregate", "_rename_sidebar_group",
           "_delete_empty_sidebar_group")


def _sources():
    return sorted((ROOT / "fiftyone_faseg").rglob("*.py")) + sorted((ROOT / "operators").glob("*.py"))


def _private_attributes():
    """``{name: {module paths}}`` of every ``x._name`` whose ``x`` is not ``self``/``cls``."""
    found = {}
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and ast.unparse(node.value) not in ("self", "cls")):
                found.setdefault(node.attr, set()).add(str(path.relative_to(ROOT)))
    return found


USERS = {name: sorted(paths) for name, paths in _private_attributes().items() if name in PRIVATE}


def _why(name):
    return "FiftyOne %s changed its private `%s`, used by %s: adapt them (or pin FiftyOne)" % (
        fo.__version__, name, ", ".join(USERS[name]))


@pytest.fixture()
def dataset(tmp_path):
    ds = fo.Dataset()
    ds.add_samples([fo.Sample(filepath=str(tmp_path / ("%d.png" % i)), n=i) for i in range(3)])
    yield ds
    if not ds.deleted:
        ds.delete()


def test_no_other_private_name(dataset):
    """A private name of FiftyOne's objects used anywhere is one this file pins."""
    objects = (dataset, dataset.limit(1), dataset.first(), fo.Dataset, fo.DatasetView, fos.Sample, fous, foo,
               fo.core.odm.dataset.ColorScheme, dataset._sample_doc_cls)
    used = {name for name in _private_attributes() if any(hasattr(o, name) for o in objects)}
    assert used - set(PRIVATE) == set(), "pin these private FiftyOne names here: %s" % {
        n: _private_attributes()[n] for n in used - set(PRIVATE)}
    assert set(PRIVATE) <= set(USERS), "no longer used (drop from PRIVATE): %s" % (set(PRIVATE) - set(USERS))


def test_collections_and_documents(dataset):
    view = dataset.limit(2)
    assert dataset._dataset is dataset and view._dataset is dataset, _why("_dataset")

    assert isinstance(dataset._doc.id, ObjectId), _why("_doc")
    raw = foo.get_db_conn().datasets.find_one({"_id": dataset._doc.id}, {"name": 1})
    assert raw["name"] == dataset.name, _why("_doc")
    foo.get_db_conn().datasets.update_one({"_id": dataset._doc.id}, {"$set": {"mask_targets.f": {"1": "cat"}}})
    dataset._doc.reload("mask_targets")
    assert dataset.mask_targets == {"f": {1: "cat"}}, _why("_doc")

    coll = dataset._sample_collection
    assert coll.name == dataset._sample_collection_name, _why("_sample_collection_name")
    assert coll.count_documents({"n": {"$ne": None}}) == 3, _why("_sample_collection")

    docs = list(view._aggregate(post_pipeline=[{"$project": {"n": True}}]))
    assert [d["n"] for d in docs] == [0, 1] and set(docs[0]) == {"_id", "n"}, _why("_aggregate")


def test_writes_reach_samples_in_memory(dataset):
    sample = dataset.first()
    dataset._bulk_write([UpdateOne({"_id": ObjectId(sample.id)}, {"$set": {"n": 10}})], ids=[sample.id])
    assert sample.n == 10, _why("_bulk_write")

    dataset._sample_collection.update_one({"_id": ObjectId(sample.id)}, {"$set": {"n": 11}})
    dataset.reload()
    assert sample.n == 11, "Dataset.reload() no longer reloads samples in memory (store.BatchWriter relies on it)"


def test_schema_and_field_docs(dataset):
    dataset._merge_sample_field_schema({"a": fo.StringField(), "b": fo.EmbeddedDocumentField(fo.Heatmap)})
    assert isinstance(dataset.get_field("a"), fo.StringField), _why("_merge_sample_field_schema")
    assert dataset.get_field("b").document_type is fo.Heatmap, _why("_merge_sample_field_schema")

    doc = dataset._sample_doc_cls._get_field_doc("a", allow_missing=True)
    assert doc is not None and doc.name == "a", _why("_get_field_doc")
    assert dataset._sample_doc_cls._get_field_doc("missing", allow_missing=True) is None, _why("_get_field_doc")


def test_generated_view_flags(dataset):
    flags = ("_is_patches", "_is_frames", "_is_clips", "_is_dynamic_groups", "_is_generated")
    for name in flags:
        assert getattr(dataset, name) is False and getattr(dataset.limit(1), name) is False, _why(name)
    dataset.add_sample_field("gt", fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)
    patches = dataset.to_patches("gt")
    assert patches._is_patches and patches._is_generated, _why("_is_patches")
    groups = dataset.group_by("n")
    assert groups._is_dynamic_groups, _why("_is_dynamic_groups")


def test_sidebar_groups(dataset):
    dataset.app_config.sidebar_groups = [fo.SidebarGroupDocument(name="ev", paths=["n"]),
                                         fo.SidebarGroupDocument(name="empty", paths=[])]
    dataset.save()
    dataset._rename_sidebar_group("ev", "ev2")
    assert [g.name for g in dataset.app_config.sidebar_groups] == ["ev2", "empty"], _why("_rename_sidebar_group")
    dataset._delete_empty_sidebar_group("empty")
    assert [g.name for g in dataset.app_config.sidebar_groups] == ["ev2"], _why("_delete_empty_sidebar_group")


def test_replaced_helpers_agree_with_fiftyone(tmp_path):
    """What replaced private FiftyOne helpers gives what FiftyOne's evaluation gives."""
    from fiftyone_faseg.evaluation.method import accuracy_precision_recall, dice_score

    rng = np.random.default_rng(0)
    gt, pred = rng.integers(0, 3, (8, 8)), rng.integers(0, 3, (8, 8))
    ds = fo.Dataset()
    try:
        ds.add_sample(fo.Sample(filepath=str(tmp_path / "a.png"), gt=fo.Segmentation(mask=gt),
                                pred=fo.Segmentation(mask=pred)))
        results = ds.evaluate_segmentations("pred", gt_field="gt", eval_key="ev", compute_dice=True,
                                            mask_targets={0: "bg", 1: "a", 2: "b"})
        conf = results.pixel_confusion_matrix
        assert dice_score(conf) == pytest.approx(ds.first()["ev_dice"], abs=1e-12)
        for average in ("micro", "macro", "weighted"):
            expected = fous.SegmentationResults(None, None, None, conf, [0, 1, 2], missing=0).metrics(average=average)
            assert accuracy_precision_recall(conf, average) == pytest.approx(
                (expected["accuracy"], expected["precision"], expected["recall"]), abs=1e-12)
        assert ds.first()["ev_accuracy"] == pytest.approx(accuracy_precision_recall(conf)[0], abs=1e-12)
    finally:
        ds.delete()


def test_fiftyone_is_in_the_declared_range():
    import re
    from importlib.metadata import version

    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    low, high = re.search(r'"fiftyone>=([\d.]+),<([\d.]+)"', text).groups()
    as_tuple = lambda v: tuple(int(p) for p in v.split(".")[:3])  # noqa: E731
    assert as_tuple(low) <= as_tuple(version("fiftyone")) < as_tuple(high)
    assert "fiftyone==%s" % version("fiftyone") in (ROOT / "constraints.txt").read_text(encoding="utf-8")
    assert inspect.signature(fo.Dataset._bulk_write).parameters.keys() >= {"ops", "ids"}, _why("_bulk_write")


def _stored(dataset, field):
    return [d.get(field) for d in dataset._sample_collection.find({}, {field: 1}).sort("_id", 1)]


def _without_ids(doc):
    """A stored label document without its ``_id`` (a fresh ObjectId), bytes as bytes."""
    if isinstance(doc, dict):
        return {k: _without_ids(v) for k, v in doc.items() if k != "_id"}
    if isinstance(doc, list):
        return [_without_ids(v) for v in doc]
    return bytes(doc) if isinstance(doc, bytes) else doc


def test_store_documents_are_what_set_values_stores(dataset, tmp_path):
    """Each label document of fiftyone_faseg.store's fast path is stored as FiftyOne's
    public set_values stores the label object, and reads back as that label."""
    from fiftyone_faseg import store

    mask = np.arange(12, dtype=np.uint8).reshape(3, 4)
    heat = np.full((2, 2), 200, np.uint8)
    cases = {
        "seg": (store.segmentation_doc(mask, faseg_run="r1"), fo.Segmentation(mask=mask, faseg_run="r1")),
        "seg_path": (store.segmentation_doc(mask_path=str(tmp_path / "m.png"), faseg_run="r1"),
                     fo.Segmentation(mask_path=str(tmp_path / "m.png"), faseg_run="r1")),
        "heat": (store.heatmap_doc(heat), fo.Heatmap(map=heat, range=[0.0, 255.0])),
        "heat_path": (store.heatmap_doc(map_path=str(tmp_path / "h.png")),
                      fo.Heatmap(map_path=str(tmp_path / "h.png"), range=[0.0, 255.0])),
        "cands": (store.classifications_doc([store.classification_doc("cat", 0.5, source="user")]),
                  fo.Classifications(classifications=[fo.Classification(label="cat", confidence=0.5, source="user")])),
    }
    ids = dataset.values("id")
    for name, (doc, label) in cases.items():
        public, fast = "public_" + name, "fast_" + name
        dataset.set_values(public, {ids[0]: label}, key_field="id")
        dataset.add_sample_field(fast, fo.EmbeddedDocumentField, embedded_doc_type=type(label))
        store.write_samples(dataset, {ids[0]: {fast: doc}})
        assert _without_ids(_stored(dataset, fast)[0]) == _without_ids(_stored(dataset, public)[0]), (
            "FiftyOne %s stores %s otherwise than fiftyone_faseg.store builds it" % (fo.__version__, name))
        read = dataset[ids[0]][fast]
        assert isinstance(read, type(label))
        assert _without_ids(read.to_dict()) == _without_ids(label.to_dict()), name
        if name == "seg":
            np.testing.assert_array_equal(read.mask, mask)
        if name == "heat":
            np.testing.assert_array_equal(read.map, heat)


def test_store_writes_every_field_of_a_sample_in_one_update(dataset):
    """write_samples sets several fields of each sample in one update (label objects
    serialized as set_values does), leaves other fields alone, and refuses undeclared fields."""
    from fiftyone_faseg import store

    dataset.add_sample_field("a", fo.EmbeddedDocumentField, embedded_doc_type=fo.Classification)
    dataset.add_sample_field("b", fo.StringField)
    ids = dataset.values("id")
    sample = dataset[ids[1]]
    store.write_samples(dataset, {ids[1]: {"a": fo.Classification(label="x"), "b": "y"}})
    assert sample.a.label == "x" and sample.b == "y" and sample.n == 1  # in memory too
    assert dataset.values("b") == [None, "y", None]
    with pytest.raises(ValueError, match="'c' is not declared"):
        store.write_samples(dataset, {ids[0]: {"b": "z", "c": 1}})
    with pytest.raises(ValueError, match="invalid value for field 'a'"):
        store.write_samples(dataset, {ids[0]: {"a": fo.Detection(label="x")}})
    assert dataset.values("b") == [None, "y", None]  # nothing of a refused batch is written

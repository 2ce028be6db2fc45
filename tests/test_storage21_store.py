"""fiftyone_faseg.store, the one writer of samples' fields, and the one pixel-value allocator
(fiftyone_faseg.run.classes.ValueAllocator) behind assign_ids and claim_values."""

import numpy as np
import pytest

import fiftyone as fo

import fiftyone_faseg as ff
from fiftyone_faseg import store
from fiftyone_faseg.fields import candidates_field, error_field
from fiftyone_faseg.run.classes import ValueAllocator, assign_ids
from fiftyone_faseg.run.settings import RUN_ATTR
from fiftyone_faseg.run.settings import RunRecord
from fiftyone_faseg.run.targets import claim_values
from images import write_image


@pytest.fixture()
def grouped(tmp_path):
    ds = fo.Dataset()
    ds.add_group_field("group", default="left")
    for i in range(2):
        group = fo.Group()
        for name in ("left", "right"):
            path = write_image(tmp_path / ("%s%d.png" % (name, i)), 24, 32)
            ds.add_sample(fo.Sample(filepath=str(path), group=group.element(name)))
    yield ds
    ds.delete()


def _all_slices(ds, field):
    return ds.select_group_slices(media_type="image").values(field)


def test_write_samples_reaches_every_group_slice_and_only_its_fields(grouped):
    ids = grouped.select_group_slices(media_type="image").values("id")
    grouped.add_sample_field("a", fo.StringField)
    grouped.add_sample_field("b", fo.EmbeddedDocumentField, embedded_doc_type=fo.Segmentation)
    grouped.add_sample_field("other", fo.StringField)
    grouped.select_group_slices(media_type="image").set_values("other", ["kept"] * 4)
    mask = np.array([[0, 1], [2, 3]], np.uint8)
    store.write_samples(grouped, {i: {"a": "x%d" % k, "b": store.segmentation_doc(mask, run="r")}
                                  for k, i in enumerate(ids)})
    assert _all_slices(grouped, "a") == ["x0", "x1", "x2", "x3"]
    assert _all_slices(grouped, "other") == ["kept"] * 4
    for seg in _all_slices(grouped, "b"):
        np.testing.assert_array_equal(seg.mask, mask)
        assert seg.run == "r"


def test_batch_writer_writes_every_batch_and_samples_in_memory_see_them(grouped):
    view = grouped.select_group_slices(media_type="image")
    ids = view.values("id")
    grouped.add_sample_field("score", fo.FloatField)
    sample = grouped[ids[3]]
    with store.BatchWriter(grouped, batch_size=3) as writer:  # two batches, the second at exit
        for k, i in enumerate(ids):
            writer.set(i, {"score": k / 4})
    assert view.values("score") == [0.0, 0.25, 0.5, 0.75]
    assert sample.score == 0.75


def test_batch_writer_refuses_an_undeclared_field_before_writing(grouped):
    ids = grouped.select_group_slices(media_type="image").values("id")
    grouped.add_sample_field("score", fo.FloatField)
    with pytest.raises(ValueError, match="'nope' is not declared"):
        with store.BatchWriter(grouped) as writer:
            writer.set(ids[0], {"score": 1.0, "nope": 2})
            writer.flush(wait=True)
    assert _all_slices(grouped, "score") == [None] * 4


def test_a_run_writes_each_sample_whole_on_every_slice(grouped, stub_faseg):
    view = grouped.select_group_slices(media_type="image")
    summary = ff.segment_samples(view, label_field="seg", classes=["cat", "dog"], segmenter=stub_faseg)
    assert len(summary.processed) == 4
    run_id = RunRecord.read(grouped, "seg").run_id
    labels = view.values("seg")
    assert all(seg is not None and seg[RUN_ATTR] == run_id for seg in labels)
    assert [[c.label for c in cands.classifications] for cands in view.values(candidates_field("seg"))] \
        == [["cat", "dog"]] * 4
    assert view.values(error_field("seg")) == [None] * 4


@pytest.mark.parametrize("names,existing,preferred", [
    (["dog", "cat", "zebra"], {1: "cat"}, {7: "Dog", 1: "zebra"}),
    (["dining table", "dog"], {}, {5: "Dining  Table", 2: "cat"}),
    (["a", "b", "c"], {}, {255: "a", 0: "b", 2: "c"}),  # 0 and 255 are never a class's
    (["x%d" % i for i in range(260)], {3: "x5"}, {1: "x200"}),
])
def test_assign_ids_and_claim_values_give_the_same_values(names, existing, preferred):
    ds = fo.Dataset()
    try:
        if existing:
            claim_values(ds, "seg", [existing[v] for v in sorted(existing)], preferred={v: n for v, n in existing.items()})
        claimed = claim_values(ds, "seg", names, preferred=preferred)
        assigned = assign_ids(names, existing=existing, preferred=preferred)
        assert claimed == {n: assigned[n] for n in names}
        values = list(claimed.values())
        assert len(set(values)) == len(values) and not {0, 255} & set(values)
    finally:
        ds.delete()


def test_allocator_takes_a_free_preferred_value_else_the_lowest_unreserved():
    allocator = ValueAllocator(["b", "a"], preferred={4: "A", 1: "z"})
    assert allocator.order() == ["a", "b"]
    assert allocator.value("a", taken=set()) == 4
    assert allocator.value("b", taken={4}) == 1  # 1 is z's, which is not being allocated
    assert ValueAllocator(["a", "b"], preferred={1: "a"}).value("b", taken=set()) == 2  # a's 1 is reserved
    assert allocator.value("a", taken={4, 1}) == 2

"""One ``run_faseg`` over every kind of bad input a large dataset holds: each sample ends
with a mask of its (upright) image size or with its reason in ``faseg_error``; the run
completes and leaves the other fields alone. Plus out-of-memory on a batch."""

import io

import fiftyone as fo
import fiftyone.operators as foo
import numpy as np
import pytest
from PIL import Image

import fiftyone_faseg as ff

RUN_URI = "@faseg/fiftyone-faseg/run_faseg"
LONG_NAME = " ".join(["unusually"] * 18) + " long class name xx"  # 200 characters
MANY = {10 + i: "thing %d" % i for i in range(200)}  # a sample with 200 classes
GT_TARGETS = {0: "background", 1: "cat", 2: "dog", 3: "猫 café ☕", 4: LONG_NAME, 6: "cat", **MANY}


def _rgb(h, w, seed=0):
    rng = np.random.RandomState(seed)
    img = np.full((h, w, 3), rng.randint(0, 255, 3), np.uint8)
    img[h // 4 : h // 2] = rng.randint(0, 255, 3)
    return img


def _gt(*values):
    mask = np.zeros((16, 16), np.uint8)  # room for 200 values
    flat = mask.reshape(-1)
    for i, v in enumerate(values):
        flat[i % flat.size] = v
    return fo.Segmentation(mask=mask)


def _make_inputs(folder):
    """`[(name, path, gt Segmentation, expected)]`: expected is ("mask", (h, w)) or ("error", text)."""
    cases = []

    def add(name, write, gt, expected):
        path = folder / name
        if write is not None:
            write(path)
        cases.append((name, str(path), gt, expected))

    add("good.png", lambda p: Image.fromarray(_rgb(40, 60)).save(p), _gt(1, 2), ("mask", (40, 60)))
    add("good2.jpg", lambda p: Image.fromarray(_rgb(48, 32, 1)).save(p), _gt(2), ("mask", (48, 32)))

    def truncated(p):
        buf = io.BytesIO()
        Image.fromarray(np.random.RandomState(0).randint(0, 255, (64, 64, 3), np.uint8)).save(buf, "JPEG")
        p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])

    add("truncated.jpg", truncated, _gt(1), ("error", "not a readable image"))
    add("empty.jpg", lambda p: p.write_bytes(b""), _gt(1), ("error", "empty (0-byte) file"))
    add("missing.jpg", None, _gt(1), ("error", "does not exist"))
    add("text.jpg", lambda p: p.write_text("this is not a JPEG"), _gt(1), ("error", "not a readable image"))
    add("gray.png", lambda p: Image.fromarray(_rgb(30, 20)[..., 0]).save(p), _gt(1), ("mask", (30, 20)))
    add("rgba.png", lambda p: Image.fromarray(np.dstack([_rgb(24, 36), np.full((24, 36), 128, np.uint8)])).save(p),
        _gt(1), ("mask", (24, 36)))
    add("palette.png", lambda p: Image.fromarray(_rgb(20, 28)).convert("P").save(p), _gt(2), ("mask", (20, 28)))
    add("palette_transparent.gif", lambda p: Image.fromarray(_rgb(20, 28)).convert("P").save(p, transparency=0),
        _gt(2), ("mask", (20, 28)))
    add("cmyk.jpg", lambda p: Image.fromarray(_rgb(26, 34)).convert("CMYK").save(p), _gt(1), ("mask", (26, 34)))
    add("sixteen.png", lambda p: Image.fromarray((np.arange(32 * 24, dtype=np.uint16) * 80).reshape(32, 24)).save(p),
        _gt(1), ("mask", (32, 24)))

    def exif_rotated(p):
        exif = Image.Exif()
        exif[0x0112] = 6  # stored 40 x 60 (h x w), shown rotated 90 degrees: 60 x 40
        Image.fromarray(_rgb(40, 60, 3)).save(p, exif=exif)

    add("exif_rotated.jpg", exif_rotated, _gt(1), ("mask", (60, 40)))
    add("one_pixel.png", lambda p: Image.fromarray(_rgb(1, 1)).save(p), _gt(1), ("mask", (1, 1)))
    add("huge.jpg", lambda p: Image.new("RGB", (8000, 6000), (90, 120, 30)).save(p, quality=50), _gt(2),
        ("mask", (6000, 8000)))
    # per-sample class lists from the ground truth: empty, duplicated, Unicode, 200 long
    add("classes_empty.png", lambda p: Image.fromarray(_rgb(16, 16)).save(p), _gt(0),
        ("error", "no candidate classes"))
    add("classes_duplicated.png", lambda p: Image.fromarray(_rgb(16, 16, 4)).save(p), _gt(1, 6),
        ("mask", (16, 16)))
    add("classes_unicode.png", lambda p: Image.fromarray(_rgb(16, 16, 5)).save(p), _gt(3, 1),
        ("mask", (16, 16)))
    add("classes_long_name.png", lambda p: Image.fromarray(_rgb(16, 16, 6)).save(p), _gt(4),
        ("mask", (16, 16)))
    add("classes_200.png", lambda p: Image.fromarray(_rgb(16, 16, 7)).save(p), _gt(*MANY),
        ("mask", (16, 16)))
    return cases


@pytest.fixture
def bad_dataset(tmp_path):
    cases = _make_inputs(tmp_path)
    ds = fo.Dataset()
    ds.add_samples([
        fo.Sample(filepath=path, ground_truth=gt, tags=["before"], note="keep %s" % name, case=name)
        for name, path, gt, _ in cases
    ])
    ds.mask_targets = {"ground_truth": GT_TARGETS}
    ds.save()
    yield ds, {name: expected for name, _, _, expected in cases}
    ds.delete()


def test_every_bad_input_ends_with_a_mask_or_an_error(bad_dataset, tiny_sd_dir):
    ds, expected = bad_dataset
    gt_before = {s.case: s.ground_truth.mask.copy() for s in ds}
    params = dict(classes_from="gt_field", gt_field="ground_truth", model_path=str(tiny_sd_dir), image_size=128,
                  batch_size=4, view_target="CURRENT_VIEW")
    result = foo.execute_operator(RUN_URI, ctx=dict(view=ds.view(), params=params))
    assert result.error is None, result.error  # the run completed

    targets = ds.mask_targets["faseg"]
    assert len(set(targets.values())) == len(targets)  # one value per name, duplicates merged
    assert {"cat", "dog", "猫 café ☕", LONG_NAME, "thing 199"} <= set(targets.values())
    values_of = {n: v for v, n in targets.items()}
    for sample in ds:
        kind, what = expected[sample.case]
        # previous fields intact
        assert sample.tags == ["before"] and sample.note == "keep %s" % sample.case
        assert np.array_equal(sample.ground_truth.mask, gt_before[sample.case])
        if kind == "error":
            assert sample.faseg is None, sample.case
            assert sample.faseg_error and what in sample.faseg_error, (sample.case, sample.faseg_error)
            continue
        assert sample.faseg_error is None, (sample.case, sample.faseg_error)
        mask = sample.faseg.get_mask()
        assert mask.shape == what, (sample.case, mask.shape)
        names = [c.label for c in sample.faseg_candidates.classifications]
        assert set(np.unique(mask).tolist()) <= {0} | {values_of[n] for n in names}, sample.case
    assert sorted(c.label for c in ds.match(fo.ViewField("case") == "classes_200.png").first()
                  .faseg_candidates.classifications) == sorted(MANY.values())
    duplicated = ds.match(fo.ViewField("case") == "classes_duplicated.png").first()
    assert set(np.unique(duplicated.faseg.get_mask()).tolist()) <= {0, values_of["cat"]}


def test_duplicated_ground_truth_names_give_one_candidate(tmp_path, tiny_faseg):
    ds = fo.Dataset()
    path = tmp_path / "dup.png"
    Image.fromarray(_rgb(16, 16)).save(path)
    ds.add_sample(fo.Sample(filepath=str(path), ground_truth=_gt(1, 6)))
    ds.mask_targets = {"ground_truth": {1: "cat", 6: "cat"}}
    ds.save()
    try:
        ff.segment_samples(ds, classes_from="gt_field", gt_field="ground_truth", segmenter=tiny_faseg)
        assert [c.label for c in ds.first().faseg_candidates.classifications] == ["cat"]
    finally:
        ds.delete()

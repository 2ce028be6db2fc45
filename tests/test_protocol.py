"""The reproduce-the-paper harness (`python -m fiftyone_faseg.protocol`), end to end on CPU.

The tiny random-weight model makes the numbers meaningless; the mechanics are checked
exactly: the mIoU against an independent pixel count, the paper's JSON files, resuming
after an interruption, and the threshold sweep from stored float16 scores.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

VOC_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "voc-sample"


# ----------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module", autouse=True)
def _no_leftover_datasets():
    """The protocol's datasets are persistent: drop those an earlier session left in the database."""
    import fiftyone as fo

    for name in ("t-ctx", "t-coco", "t-voc-sample", "t-voc-json", "t-ctx-run", "t-voc-tagger"):
        if fo.dataset_exists(name):
            fo.delete_dataset(name)


def _palette_png(path, labels):
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette([v for i in range(256) for v in (i * 7 % 256, i * 13 % 256, i * 29 % 256)])
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def _photo(path, seed, size=(72, 56)):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=95)


def _pascal_tree(root, labels_dir, split_dir, masks):
    """A VOC/Context layout: masks = {id: (H, W) label array}."""
    for k, (image_id, labels) in enumerate(masks.items()):
        _photo(root / "JPEGImages" / (image_id + ".jpg"), k, size=labels.shape[::-1])
        _palette_png(root / labels_dir / (image_id + ".png"), labels)
    split = root / "ImageSets" / split_dir / "val.txt"
    split.parent.mkdir(parents=True, exist_ok=True)
    split.write_text("\n".join(masks) + "\n")
    return root


def _blocks(h, w, values, void=True):
    labels = np.zeros((h, w), np.uint8)
    for i, v in enumerate(values):
        labels[h // 4 * i : h // 4 * (i + 1) + h // 3, w // 5 * i : w // 5 * i + w // 2] = v
    if void:
        labels[0, :] = 255
    return labels


def _run(tmp_path, *args):
    from fiftyone_faseg.protocol.cli import main

    out = tmp_path / "out"
    assert main([*map(str, args), "--device", "cpu", "--image-size", "128", "--output-dir", str(out),
                 "--no-progress", "--batch-size", "2"]) == 0
    reports = sorted((out / "results").glob("*.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(reports[-1].read_text())


def _independent_miou(dataset, view, label_field, gt_files, class_names):
    """mIoU (%) by a per-class pixel loop over the stored masks and the original label files."""
    pred_names = {int(v): n for v, n in dataset.mask_targets[label_field].items()}
    index = {n: i for i, n in enumerate(class_names)}
    k = len(class_names)
    tp, gt_n, pred_n = np.zeros(k), np.zeros(k), np.zeros(k)
    for sample in view.exists(label_field):
        gt = np.array(Image.open(gt_files[sample.image_id]))
        pred_values = np.array(Image.open(sample[label_field].mask_path))
        pred = np.zeros_like(pred_values, dtype=np.int64)
        for v in np.unique(pred_values):
            pred[pred_values == v] = 0 if v == 0 else index[pred_names[int(v)]]
        valid = gt != 255
        for c in range(k):
            g, p = (gt == c) & valid, (pred == c) & valid
            tp[c] += np.sum(g & p)
            gt_n[c] += np.sum(g)
            pred_n[c] += np.sum(p)
    union = gt_n + pred_n - tp
    return 100 * float(np.mean(tp[union > 0] / union[union > 0]))


def _dataset(report):
    import fiftyone as fo

    dataset = fo.load_dataset(report["dataset"])
    return dataset, dataset.match({"image_id": {"$exists": True}})


# ----------------------------------------------------------------------------- unit
def test_coco_lookup_tables():
    from fiftyone_faseg.protocol.benchmarks import coco_lut, get_benchmark

    names = get_benchmark("coco").class_names()
    raw, train = coco_lut(False), coco_lut(True)
    # raw stuffthingmaps hold category id - 1: person (1) -> 0, stop sign (13) -> 12
    assert names[raw[0]] == "person" and names[raw[12]] == "stop sign" and names[raw[89]] == "toothbrush"
    assert raw[11] == 0 and raw[100] == 0 and raw[255] == 255  # unused id, stuff, unlabeled
    assert names[train[11]] == "stop sign" and names[train[79]] == "toothbrush" and train[80] == 0


def test_not_a_voc_folder(tmp_path):
    from fiftyone_faseg.protocol.importers import import_benchmark

    (tmp_path / "JPEGImages").mkdir()
    with pytest.raises(FileNotFoundError, match="is not a PASCAL VOC folder: it lacks SegmentationClass/"):
        import_benchmark("voc", tmp_path, output_dir=tmp_path / "out")


def test_context_and_coco_imports(tmp_path):
    from fiftyone_faseg.protocol.importers import import_benchmark

    labels = _blocks(40, 50, [5, 59, 22])
    _pascal_tree(tmp_path / "ctx", "SegmentationClassContext", "SegmentationContext", {"2008_000002": labels})
    dataset, ids = import_benchmark("context", tmp_path / "ctx", "t-ctx", tmp_path / "out")
    assert len(dataset.mask_targets["ground_truth"]) == 60 and dataset.mask_targets["ground_truth"][0] == "background"
    assert np.array_equal(dataset.first().ground_truth.get_mask(), labels)  # indices, not palette colours

    coco = tmp_path / "coco"
    raw = np.full((30, 40), 100, np.uint8)  # stuff
    raw[5:15, 5:20], raw[15:25, 20:35], raw[0] = 0, 2, 255  # person, car, unlabeled
    _photo(coco / "images" / "val2017" / "000000000139.jpg", 1, size=(40, 30))
    Image.fromarray(raw).save((coco / "stuffthingmaps_trainval2017" / "val2017").mkdir(parents=True) or
                              coco / "stuffthingmaps_trainval2017" / "val2017" / "000000000139.png")
    dataset, _ = import_benchmark("coco", coco, "t-coco", tmp_path / "out")
    mask, targets = dataset.first().ground_truth.get_mask(), dataset.mask_targets["ground_truth"]
    assert len(targets) == 81
    assert targets[mask[10, 10]] == "person" and targets[mask[20, 30]] == "car"
    assert mask[28, 2] == 0 and (mask[0] == 255).all()


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def tiny_model(tiny_sd_dir):
    return tiny_sd_dir


def test_voc_sample_resume_miou_and_sweep(tmp_path, tiny_model):
    """Ground-truth candidates on the real VOC sample: --limit 2, then --limit 4 resumes."""
    if not VOC_SAMPLE.is_dir():
        pytest.skip("the voc-sample data set is absent")
    from fiftyone_faseg.analysis import iterate
    from fiftyone_faseg.protocol.benchmarks import get_benchmark

    common = ["voc", "--root", VOC_SAMPLE, "--model", tiny_model, "--classes-from", "gt",
              "--dataset-name", "t-voc-sample", "--sweep", 0.4, 0.6]
    first = _run(tmp_path, *common, "--limit", 2)
    assert first["timing"]["processed"] == 2 and first["num_images"] == 2
    second = _run(tmp_path, *common, "--limit", 4)
    assert second["timing"]["processed"] == 2 and second["num_evaluated"] == 4
    assert second["timing"]["model_s_per_image"] > 0 and second["timing"]["gpu_max_memory_bytes"] is None
    third = _run(tmp_path, *common, "--limit", 4)  # nothing left: no model work, same numbers
    assert third["timing"]["processed"] == 0 and third["miou"] == second["miou"]

    dataset, view = _dataset(second)
    assert len(dataset) == 4
    gt_files = {p.stem: p for p in (VOC_SAMPLE / "SegmentationClass").glob("*.png")}
    names = get_benchmark("voc").class_names()
    assert second["miou"] == pytest.approx(_independent_miou(dataset, view, "faseg_gt", gt_files, names), abs=1e-9)
    assert second["sweep"]["0.55"] == second["miou"]
    results = dataset.load_evaluation_results(second["fiftyone_eval_key"])
    assert 100 * results.miou == pytest.approx(second["miou"], abs=1e-9)
    miou = iterate.sweep(view, "faseg_gt", "ground_truth", [0.4, 0.55, 0.6], vocabulary=get_benchmark("voc").vocabulary())
    assert 100 * miou[0.55] == pytest.approx(second["miou"], abs=1e-9) and miou[0.4] != miou[0.6]


def test_paper_json_path_on_written_voc_layout(tmp_path, tiny_model):
    """The paper's candidate and caption files (multi-word names) drive the class prompts."""
    from fiftyone_faseg.protocol.benchmarks import get_benchmark

    masks = {"2007_000001": _blocks(48, 64, [15, 11]), "2007_000002": _blocks(40, 56, [20, 9]),
             "2007_000003": _blocks(48, 48, [3])}
    root = _pascal_tree(tmp_path / "VOC2012", "SegmentationClass", "Segmentation", masks)
    cand = {"2007_000001": "person dining table", "2007_000002": "tv monitor chair potted plant", "2007_000003": ""}
    caps = {"2007_000001": "a man at a table", "2007_000002": "a tv  in a room", "2007_000003": "a bird"}
    (tmp_path / "cand.json").write_text(json.dumps(cand))
    (tmp_path / "caps.json").write_text(json.dumps(caps))

    report = _run(tmp_path, "voc", "--root", root, "--model", tiny_model, "--candidates", tmp_path / "cand.json",
                  "--captions", tmp_path / "caps.json", "--dataset-name", "t-voc-json", "--threshold", 0.5)
    assert report["classes_from"] == "json" and report["threshold"] == 0.5
    assert report["timing"]["processed"] == 2 and report["num_without_mask"] == 1  # empty candidates: skipped

    dataset, view = _dataset(report)
    by_id = {s.image_id: s for s in view}
    s1, s2, s3 = by_id["2007_000001"], by_id["2007_000002"], by_id["2007_000003"]
    assert [c.label for c in s1.faseg_json_candidates.classifications] == ["person", "dining table"]
    assert [c.label for c in s2.faseg_json_candidates.classifications] == ["tv monitor", "chair", "potted plant"]
    assert s2.faseg_json_caption == "a tv in a room" and s3.faseg_json is None and s3.faseg_json_error
    from fiftyone_faseg.run.storage import load_scores

    assert load_scores(s2.faseg_json_scores)[1] == ["tv monitor", "chair", "potted plant"]
    targets = dataset.mask_targets["faseg_json"]
    assert {targets[v] for v in np.unique(s2.faseg_json.get_mask()) if v} <= {"tv monitor", "chair", "potted plant"}

    gt_files = {i: root / "SegmentationClass" / (i + ".png") for i in masks}
    names = get_benchmark("voc").class_names()
    assert report["miou"] == pytest.approx(_independent_miou(dataset, view, "faseg_json", gt_files, names), abs=1e-9)
    assert report["sweep"]["0.50"] == report["miou"]

    # re-thresholding at the run's threshold gives the run's masks back, pixel for pixel
    from fiftyone_faseg.analysis import iterate

    iterate.rethreshold(view, "faseg_json", 0.5, out_field="faseg_again", output_dir=str(tmp_path / "again"))
    for sample in view.exists("faseg_json"):
        assert np.array_equal(sample.faseg_again.get_mask(), sample.faseg_json.get_mask())

    # a candidate file of another benchmark is refused with a clear error
    (tmp_path / "other.json").write_text(json.dumps({"000000000139": "person"}))
    from fiftyone_faseg.protocol.harness import run_protocol

    with pytest.raises(ValueError, match="has none of the 3 image ids"):
        run_protocol("voc", root, candidates=tmp_path / "other.json", dataset_name="t-voc-json",
                     output_dir=tmp_path / "out", image_size=128, model_path=tiny_model, progress=False,
                     threshold=0.5, captions=tmp_path / "caps.json", label_field="faseg_other")


def test_context_run_with_background_class(tmp_path, tiny_model):
    """PASCAL Context: 60 classes with background, its preset threshold 0.5."""
    masks = {"2008_000002": _blocks(40, 48, [15, 59]), "2008_000003": _blocks(32, 40, [25])}
    root = _pascal_tree(tmp_path / "ctx", "SegmentationClassContext", "SegmentationContext", masks)
    report = _run(tmp_path, "context", "--root", root, "--model", tiny_model, "--dataset-name", "t-ctx-run",
                  "--sweep")
    assert report["threshold"] == 0.5 and report["timing"]["processed"] == 2
    assert len(report["class_iou"]) == 60 and list(report["class_iou"])[0] == "background"
    assert list(report["sweep"]) == ["0.50"] and report["sweep"]["0.50"] == report["miou"]


def test_tagger_candidates_from_local_models(tmp_path, tiny_model):
    """--classes-from tagger with BLIP and CLIP from local folders (no Hub)."""
    from faseg_core.testing.candidates import build_tiny_blip, build_tiny_clip

    blip, clip = build_tiny_blip(tmp_path / "blip"), build_tiny_clip(tmp_path / "clip")
    masks = {"2007_000001": _blocks(40, 48, [8, 12]), "2007_000002": _blocks(32, 40, [15])}
    root = _pascal_tree(tmp_path / "voc", "SegmentationClass", "Segmentation", masks)
    report = _run(tmp_path, "voc", "--root", root, "--model", tiny_model, "--classes-from", "tagger",
                  "--captioner", blip, "--tagger", clip, "--dataset-name", "t-voc-tagger", "--sweep")
    assert report["classes_from"] == "tagger" and report["timing"]["processed"] == 2
    _, view = _dataset(report)
    for sample in view:
        cands = sample[report["label_field"] + "_candidates"].classifications
        assert cands and all(c.source in ("caption", "tagger", "caption+tagger", "vocabulary") for c in cands)
        assert sample[report["label_field"] + "_caption"]

"""Per-stage time and memory of the FA-Seg pipeline, with random-weight SD-1.x models.

Stages (each timed around the pipeline's own pieces while `FASeg.__call__` runs unchanged):
load (`FASeg.from_pretrained`), text (`encode_text`), images (`encode_images`: resize + VAE),
inversion (`invert`, only with `run_inversion=True`), unet (the UNet pass under
`attention.recording`), refine (`hard.refine`, batched over the pass), labels
(`readout.label_maps`: upsample, threshold, resize, on the model's device), other (the rest:
image reading, prompt building, class-map gathering, unflip, the copy to the host).

Settings: the tiny model at 512 px and 128 px, and the full SD-1.5-size model (random
weights, built locally) at 512 px — one image, batch 1 on the CPU; batch 1/4/8 in fp16 on a
GPU when there is one. Variants: attention store float32 / float16, the identity inversion
UNet call on, and batch sizes (s/image).

Also: "recorded attention per image pair" = bytes of `AttentionRecorder.sums` after the UNet
pass of one image and its mirror (target ≤ 100 MB), against what the reference keeps (every
layer's per-head self- and cross-attention maps in fp16).

    python -m benchmarks.bench_core [--quick] [--out DIR]
"""

from __future__ import annotations

import statistics
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from diffusers.models.attention_processor import Attention

from faseg_core import FASeg, FASegConfig, attention, hard, pipeline, readout
from faseg_core.attention import SELF
from faseg_core.testing import save_diffusion_checkpoint

from . import common

NAME = "core"
TARGET_RECORDED_MB = 100.0
PAPER = {"s_per_image": 0.36, "memory_gb": 13.4, "card": "RTX 4090, fp16"}
STAGES = ("text", "images", "inversion", "unet", "refine", "labels", "other")
CLASSES = ["person", "dog", "cat", "sofa", "potted plant"]
CAPTION = "a person sitting on a sofa with a dog and a cat next to a potted plant"
REFERENCE_TOKENS = 77  # the reference's cross-attention maps span the 77 prompt tokens
REFERENCE_BYTES = 2  # ... and are kept in fp16


# ---------------------------------------------------------------------------- plan
def variant(label, images=1, **overrides) -> dict:
    return {"label": label, "images": images, "overrides": {"batch_size": images, **overrides}}


def plan(quick: bool, cuda: bool) -> list[dict]:
    """The settings (model shape × image size) and the variants measured for each."""
    other_store = "float32" if cuda else "float16"  # the default is float16 with a half model (CUDA)
    common_variants = [variant("store " + other_store, store_dtype=other_store), variant("inversion", run_inversion=True)]
    tiny = [variant("default"), *common_variants, variant("batch 2", 2), variant("batch 4", 4)]
    if quick:
        return [{"shape": "tiny", "image_size": 64, "repeats": 1, "variants": tiny[:4]}]
    if cuda:
        big = [variant("default", 8, batch_size=1), variant("batch 4", 8, batch_size=4),
               variant("batch 8", 8, batch_size=8), *common_variants]
        repeats = 5
    else:  # one 512 px pair through the full UNet takes a while on a CPU: 1 image, batch 1
        big = [variant("default"), variant("inversion", run_inversion=True)]
        repeats = 1
    return [
        {"shape": "tiny", "image_size": 512, "repeats": 5, "variants": tiny},
        {"shape": "tiny", "image_size": 128, "repeats": 5, "variants": tiny},
        {"shape": "sd15", "image_size": 512, "repeats": repeats, "variants": big},
    ]


def photos(n: int, seed: int = 0) -> list[np.ndarray]:
    """VOC-sized (375×500) RGB arrays: smooth random blobs (content does not change the cost)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, 6, 8, 3)).astype(np.float32)
    big = torch.nn.functional.interpolate(torch.from_numpy(small).permute(0, 3, 1, 2), size=(375, 500), mode="bilinear")
    return list(big.clamp(0, 255).byte().permute(0, 2, 3, 1).numpy())


# ---------------------------------------------------------------------------- instrumentation
def _timed(meter: common.Meter, name: str, fn):
    def wrapper(*args, **kwargs):
        with meter.stage(name):
            return fn(*args, **kwargs)

    return wrapper


def _recorder_stats(recorder) -> dict:
    sums = recorder.sums
    return {
        "bytes": sum(t.numel() * t.element_size() for t in sums.values()),
        "by_key": {f"{k}@{r}": t.numel() * t.element_size() for (k, r), t in sums.items()},
        "latents": next(iter(sums.values())).shape[0],
        "self_layers": {r: recorder.counts[(k, r)] for (k, r) in sums if k == SELF},
        "store_dtype": str(recorder.store_dtype).replace("torch.", ""),
    }


@contextmanager
def instrumented(seg: FASeg, meter: common.Meter, records: list):
    """Time the pipeline's stages into `meter` and collect each UNet pass's recorder stats."""

    @contextmanager
    def recording(unet, recorder):
        with meter.stage("unet"), attention.recording(unet, recorder):
            yield recorder
        records.append(_recorder_stats(recorder))

    patches = [
        (seg, "encode_text", _timed(meter, "text", seg.encode_text)),
        (seg, "encode_images", _timed(meter, "images", seg.encode_images)),
        (seg, "invert", _timed(meter, "inversion", seg.invert)),
        (hard, "refine", _timed(meter, "refine", hard.refine)),
        (readout, "label_maps", _timed(meter, "labels", readout.label_maps)),
        (pipeline, "recording", recording),
    ]
    saved = [(obj, name, obj.__dict__.get(name)) for obj, name, _ in patches]
    try:
        for obj, name, fn in patches:
            setattr(obj, name, fn)
        yield
    finally:
        for obj, name, old in saved:
            if old is None:
                delattr(obj, name)
            else:
                setattr(obj, name, old)


def run_once(seg: FASeg, images, memory: bool) -> tuple[common.Meter, list]:
    meter, records = common.Meter(memory=memory, dev=seg.device), []
    with instrumented(seg, meter, records), meter.measure():
        seg(images, CLASSES, captions=CAPTION)
    meter.seconds["other"] = meter.seconds["total"] - sum(meter.seconds[s] for s in STAGES if s != "other")
    return meter, records


# ---------------------------------------------------------------------------- measurement
def reference_bytes(stats: dict, heads: int, views: int) -> int:
    """What the reference keeps for one image pair: every layer's per-head self- and
    cross-attention maps (77 tokens) in fp16, at every grid."""
    return sum(
        layers * heads * views * (r**4 + r**2 * REFERENCE_TOKENS) * REFERENCE_BYTES
        for r, layers in stats["self_layers"].items()
    )


def measure_variant(seg: FASeg, spec: dict, repeats: int) -> dict:
    """One memory-profiled run (also the warm-up), then `repeats` timing runs."""
    images = photos(spec["images"])
    mem_meter, records = run_once(seg, images, memory=True)
    timings = [run_once(seg, images, memory=False)[0].seconds for _ in range(repeats)]
    seconds = {s: statistics.median(t[s] for t in timings) for s in (*STAGES, "total")}
    heads = max(m.heads for m in seg.unet.modules() if isinstance(m, Attention))
    views = 2 if seg.config.flip else 1
    stats = records[0]
    per_pair = stats["bytes"] * views // stats["latents"]
    return {
        "label": spec["label"],
        "images": spec["images"],
        "config": spec["overrides"],
        "store_dtype": stats["store_dtype"],
        "seconds": seconds,
        "timing_runs": [t["total"] for t in timings],
        "min_total_s": min(t["total"] for t in timings),
        "s_per_image": seconds["total"] / spec["images"],
        "peak_mb": {k: v / common.MB for k, v in mem_meter.peak_bytes.items()},
        "max_allocated_gb": None if mem_meter.max_allocated_bytes is None else mem_meter.max_allocated_bytes / 1e9,
        "recorded_mb_per_pair": per_pair / common.MB,
        "recorded_by_key_mb": {k: v / common.MB for k, v in stats["by_key"].items()},
        "self_layers_per_grid": stats["self_layers"],
        "heads": heads,
        "reference_mb_per_pair": reference_bytes(stats, heads, views) / common.MB,
    }


def measure_setting(folder: Path, setting: dict, dev: torch.device) -> dict:
    config = FASegConfig().at_image_size(setting["image_size"])
    meter = common.Meter(memory=True, dev=dev)
    with meter.measure():
        seg = FASeg.from_pretrained(folder, config=config, device=dev)
    out = {
        "model": setting["shape"],
        "image_size": setting["image_size"],
        "dtype": str(seg.dtype).replace("torch.", ""),
        "device": str(dev),
        "repeats": setting["repeats"],
        "load_s": meter.seconds["total"],
        "load_peak_mb": meter.peak_bytes["total"] / common.MB,
        "variants": [],
    }
    for spec in setting["variants"]:  # one FASeg per variant, sharing the loaded components
        variant_seg = FASeg(seg.unet, seg.vae, seg.text_encoder, seg.tokenizer,
                            config=config.replace(**spec["overrides"]), device=dev, dtype=seg.dtype)
        out["variants"].append(measure_variant(variant_seg, spec, setting["repeats"]))
        print(f"  {setting['shape']} {setting['image_size']} px, {spec['label']}: "
              f"{out['variants'][-1]['seconds']['total']:.3f} s", flush=True)
    return out


# ---------------------------------------------------------------------------- report
def _rows(results, pick):
    for s in results["settings"]:
        for v in s["variants"]:
            row = pick(s, v)
            if row is not None:
                yield [f"{s['model']} {s['image_size']} px", *row]


def report(results: dict) -> str:
    text = common.table(
        "Pipeline stages, median seconds (load once per setting)",
        ["setting", "variant", "images", "load", *STAGES, "total", "min total", "s/image"],
        list(_rows(results, lambda s, v: [v["label"], v["images"], s["load_s"], *(v["seconds"][k] for k in STAGES),
                                          v["seconds"]["total"], v["min_total_s"], v["s_per_image"]])),
    )
    text += common.table(
        "Pipeline stages, peak MB allocated beyond the stage's start (one profiled run)",
        ["setting", "variant", "load", *STAGES[:-1], "whole call"],
        list(_rows(results, lambda s, v: [v["label"], s["load_peak_mb"], *(v["peak_mb"].get(k) for k in STAGES[:-1]),
                                          v["peak_mb"]["total"]])),
    )
    text += common.table(
        f"Recorded attention per image pair (target ≤ {TARGET_RECORDED_MB:g} MB) vs the reference's per-layer store",
        ["setting", "store", "ours MB", "reference MB", "ratio", "self layers per grid", "heads", "target met"],
        list({(r[0], r[1]): r for r in _rows(results, lambda s, v: [
            v["store_dtype"], v["recorded_mb_per_pair"], v["reference_mb_per_pair"],
            f"{v['reference_mb_per_pair'] / v['recorded_mb_per_pair']:.1f}×", v["self_layers_per_grid"], v["heads"],
            v["recorded_mb_per_pair"] <= TARGET_RECORDED_MB])}.values()),
    )
    text += common.table("Identity inversion UNet call: skipped (ours) vs run_inversion=True, same run",
                         ["setting", "UNet s, skipped", "UNet + inversion s", "UNet-time ratio", "total ratio"],
                         inversion_rows(results))
    text += common.table("Batch size (s/image: median, and min of the runs)", ["setting", "variant", "images", "s/image", "min s/image"],
                         list(_rows(results, lambda s, v: [v["label"], v["images"], v["s_per_image"], v["min_total_s"] / v["images"]]
                                    if v["label"] in ("default", *(f"batch {b}" for b in (2, 4, 8))) else None)))
    if results["gpu"]:
        text += common.table(f"GPU vs the paper ({PAPER['card']})", ["setting", "variant", "s/image", "paper s/image",
                             "max allocated GB", "paper GB"],
                             list(_rows(results, lambda s, v: [v["label"], v["s_per_image"], PAPER["s_per_image"],
                                                               v["max_allocated_gb"], PAPER["memory_gb"]]
                                        if s["model"] == "sd15" else None)))
    else:
        note = "GPU part skipped: CUDA is not available on this machine (fp16, batch 1/4/8 vs the paper's 0.36 s/image, 13.4 GB)."
        print(note + "\n")
        text += note + "\n"
    return text


def inversion_rows(results: dict) -> list[list]:
    rows = []
    for s in results["settings"]:
        by_label = {v["label"]: v for v in s["variants"]}
        base, inv = by_label.get("default"), by_label.get("inversion")
        if base is None or inv is None:
            continue
        unet_base = base["seconds"]["unet"]
        unet_inv = inv["seconds"]["unet"] + inv["seconds"]["inversion"]
        rows.append([f"{s['model']} {s['image_size']} px", unet_base, unet_inv, f"{unet_inv / unet_base:.2f}×",
                     f"{inv['seconds']['total'] / base['seconds']['total']:.2f}×"])
    return rows


# ---------------------------------------------------------------------------- main
def main(argv=None) -> dict:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--tiny-checkpoint", type=Path, help="an existing tiny checkpoint folder to use instead of building one")
    args = p.parse_args(argv)
    dev = common.device()
    results = {"machine": common.machine(), "quick": args.quick, "gpu": dev.type == "cuda", "settings": [],
               "paper": PAPER, "target_recorded_mb": TARGET_RECORDED_MB}
    print(common.describe_machine(results["machine"]), flush=True)
    with tempfile.TemporaryDirectory(prefix="faseg-bench-") as tmp:
        folders = {"tiny": args.tiny_checkpoint} if args.tiny_checkpoint else {}
        for setting in plan(args.quick, results["gpu"]):
            shape = setting["shape"]
            if shape not in folders:
                print(f"building the {shape} checkpoint ...", flush=True)
                folders[shape] = save_diffusion_checkpoint(Path(tmp) / shape, shape=shape)
            results["settings"].append(measure_setting(folders[shape], setting, dev))
    results["markdown"] = report(results)
    common.write_json(NAME, results, args.out)
    return results


if __name__ == "__main__":
    main()

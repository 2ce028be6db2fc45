"""FA-Seg against the bare UNet + VAE forward it is built on, in one run (issue 20).

    python -m benchmarks.bench_gpu            # on a CUDA machine: SD-1.5-size random weights, fp16
    python -m benchmarks.bench_gpu --cpu      # the CPU measurement: tiny model, 512 px, 8 VOC photos
    python -m benchmarks.bench_gpu --smoke    # a few seconds on any machine (keeps the code running)

Every number is measured side by side in the same process, medians of `--repeats` runs:

- **bare**: the UNet forward of the same latents and prompts with the model's own
  attention (SDPA, no recording), plus the VAE encode of the same image pairs — the floor
  FA-Seg cannot go below without a smaller model;
- **recorded UNet**: the same UNet forward under `faseg_core.attention.recording` with the
  class prompts (the ratio recorded / bare UNet is the cost of recording attention); where
  the Triton kernels record (CUDA), also the torch path's time on the same inputs;
- **ours**: `FASeg.__call__` end to end, at each batch size and class count, s/image,
  with a stage table (text, images, unet, after = everything after the UNet) and the peak
  allocated memory on CUDA; on a GPU also batch 1 with `config.compile` (CUDA graphs);
- the FLOP bound: UNet + VAE-encoder FLOPs per image pair (counted with
  `torch.utils.flop_counter`) over the card's peak (`--peak-tflops`, 790 for an H200 in
  fp16 dense).

Models are built with `faseg_core.testing.build_components` (random weights, no downloads).
The JSON goes to `benchmarks/out/gpu.json` (`gpu_cpu.json`, `gpu_smoke.json` for the CPU settings;
`--out DIR` for another folder).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from faseg_core import FASeg, FASegConfig, attention, readout
from faseg_core.testing import build_components, save_clip_tokenizer

from . import common

NAME = "gpu"
VOC = Path(__file__).resolve().parents[2] / "shared" / "data" / "voc-sample" / "JPEGImages"
VOC_CLASSES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "dining table", "dog",
    "horse", "motorbike", "person", "potted plant", "sheep", "sofa", "train", "tv monitor",
]
CAPTION = "a photo"
STAGES = ("text", "images", "unet", "after")

# name -> (model shape, image size, images per run, batch sizes, class counts, dtype)
SETTINGS = {
    "gpu": ("sd15", 512, 32, (1, 8, 16, 32), (5, 20), "float16"),
    "cpu": ("tiny", 512, 8, (4,), (20,), "float32"),
    "smoke": ("tiny", 64, 2, (2,), (3,), "float32"),
}


# ---------------------------------------------------------------------------- inputs
def photos(n: int, folder: Path = VOC) -> list:
    """`n` VOC photos (375×500 or so) as PIL images, cycling; smooth random blobs without them."""
    from PIL import Image

    paths = sorted(folder.glob("*.jpg")) if folder.is_dir() else []
    if paths:
        return [Image.open(paths[i % len(paths)]).convert("RGB") for i in range(n)]
    rng = np.random.default_rng(0)
    small = torch.from_numpy(rng.integers(0, 256, (n, 3, 6, 8)).astype(np.float32))
    big = torch.nn.functional.interpolate(small, size=(375, 500), mode="bilinear").clamp(0, 255).byte()
    return [Image.fromarray(a) for a in big.permute(0, 2, 3, 1).numpy()]


def build(shape: str, image_size: int, dtype: str, device: torch.device) -> FASeg:
    """A `FASeg` on random-weight components of `shape` (the real CLIP tokenizer, built offline)."""
    from transformers import CLIPTokenizer

    components = build_components(shape)
    with tempfile.TemporaryDirectory(prefix="faseg-tok-") as tmp:
        tokenizer = CLIPTokenizer.from_pretrained(save_clip_tokenizer(Path(tmp)), model_max_length=77)
    config = FASegConfig(dtype=dtype).at_image_size(image_size)
    return FASeg(**components, tokenizer=tokenizer, config=config, device=device)


# ---------------------------------------------------------------------------- timing
def _median_time(fn, repeats: int, dev) -> float:
    fn()  # warm-up
    runs = []
    for _ in range(repeats):
        common.sync(dev)
        start = time.perf_counter()
        fn()
        common.sync(dev)
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def unet_inputs(seg: FASeg, images: list, classes: list[str], cfg: FASegConfig):
    """The latents, reconstruction prompts and class-prompt arguments (`class_embeds`, the
    `class_tokens` the pipeline records) of one UNet pass of `images`."""
    jobs = [seg._prepare(i, im, classes, CAPTION) for i, im in enumerate(images)]
    views = 2 if cfg.flip else 1
    text = seg.encode_text([j.prompt for j in jobs]).repeat_interleave(views, dim=0)
    class_embeds = seg.encode_text([p.text for p in jobs[0].prompts])[None].repeat(len(images) * views, 1, 1, 1)
    plan = readout.plan([j.prompts for j in jobs], [(j.image.width, j.image.height) for j in jobs],
                        seg.tokenizer.model_max_length, seg.device)
    latents = seg.encode_images([j.image for j in jobs], cfg)
    return latents, text, {"class_embeds": class_embeds, "class_tokens": readout.columns(plan, views)}


def recorder_for(seg: FASeg, cfg: FASegConfig, **kwargs) -> attention.AttentionRecorder:
    return attention.AttentionRecorder(
        self_resolutions=[r for r, w in cfg.self_weights.items() if w > 0],
        cross_resolutions=[r for r, w in cfg.cross_weights.items() if w > 0],
        store_dtype=seg.store_dtype(cfg), chunk=cfg.attention_chunk, **kwargs,
    )


@torch.no_grad()
def unet_times(seg: FASeg, images: list, classes: list[str], cfg: FASegConfig, repeats: int) -> dict:
    """Seconds of one pass of `images` (one batch): VAE encode, bare UNet, recorded UNet."""
    latents, text, class_kwargs = unet_inputs(seg, images, classes, cfg)

    def bare():
        seg.unet(latents, cfg.timestep, encoder_hidden_states=text)

    def recorded(kernel="torch"):
        recorder = recorder_for(seg, cfg, kernel=kernel)
        with attention.recording(seg.unet, recorder):
            seg.unet(latents, cfg.timestep, encoder_hidden_states=text, cross_attention_kwargs=class_kwargs)
        recorder.reset()

    def vae():
        seg.encode_images(images, cfg)

    dev = seg.device
    out = {  # back to back, so machine noise hits all alike
        "vae_s": _median_time(vae, repeats, dev),
        "bare_unet_s": _median_time(bare, repeats, dev),
        "recorded_unet_s": _median_time(recorded, repeats, dev),
    }
    out["recording_ratio"] = out["recorded_unet_s"] / out["bare_unet_s"]
    if attention._triton(dev) is not None:  # does the Triton recording win? same inputs, back to back
        out["recorded_unet_triton_s"] = _median_time(lambda: recorded("triton"), repeats, dev)
    return out


@contextmanager
def staged(seg: FASeg, seconds: dict):
    """Time `encode_text`, `encode_images` and the recorded UNet pass of `seg`'s calls into `seconds`."""
    dev = seg.device

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            common.sync(dev)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                common.sync(dev)
                seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
        return wrapper

    saved = {name: seg.__dict__.get(name) for name in ("encode_text", "encode_images")}
    seg.encode_text = timed("text", seg.encode_text)
    seg.encode_images = timed("images", seg.encode_images)
    seg.unet.forward = timed("unet", seg.unet.forward)
    try:
        yield seconds
    finally:
        del seg.unet.__dict__["forward"]
        for name, fn in saved.items():
            if fn is None:
                seg.__dict__.pop(name, None)
            else:
                setattr(seg, name, fn)


def call_times(seg: FASeg, images: list, classes: list[str], cfg: FASegConfig, repeats: int) -> dict:
    """Median stage seconds of `seg(images, classes, config=cfg)`; peak allocated on CUDA."""
    dev = seg.device
    seg(images[: cfg.batch_size], classes, captions=CAPTION, config=cfg)  # warm-up
    runs = []
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(repeats):
        seconds = {}
        with staged(seg, seconds):
            common.sync(dev)
            start = time.perf_counter()
            seg(images, classes, captions=CAPTION, config=cfg)
            common.sync(dev)
            seconds["total"] = time.perf_counter() - start
        seconds["after"] = seconds["total"] - sum(seconds.get(s, 0.0) for s in STAGES[:-1])
        runs.append(seconds)
    out = {s: statistics.median(r.get(s, 0.0) for r in runs) for s in (*STAGES, "total")}
    out["s_per_image"] = out["total"] / len(images)
    out["outside_unet_vae_share"] = 1 - (out["unet"] + out["images"]) / out["total"]
    out["peak_allocated_gb"] = torch.cuda.max_memory_allocated() / 1e9 if dev.type == "cuda" else None
    return out


def flops_per_pair(seg: FASeg, cfg: FASegConfig) -> float:
    """UNet + VAE-encoder FLOPs of one image pair (image + mirror), counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    views = 2 if cfg.flip else 1
    side = cfg.image_size
    pixels = torch.zeros(views, 3, side, side, device=seg.device, dtype=seg.dtype)
    text = torch.zeros(views, 77, seg.text_encoder.config.hidden_size, device=seg.device, dtype=seg.dtype)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        latents = seg.vae.encode(pixels).latent_dist.mean
        seg.unet(latents, 0, encoder_hidden_states=text)
    return float(counter.get_total_flops())


# ---------------------------------------------------------------------------- main
def measure(name: str, repeats: int, peak_tflops: float, threads: int | None, save=None) -> dict:
    """Every variant of setting `name`; `save(results)` after each one, so that a run stopped
    at a device's time limit keeps what it measured (the compiled variant comes last)."""
    shape, image_size, n_images, batches, class_counts, dtype = SETTINGS[name]
    if threads:
        torch.set_num_threads(threads)
    dev = common.device()
    seg = build(shape, image_size, dtype if dev.type == "cuda" else "float32", dev)
    images = photos(n_images)
    results = {"machine": common.machine(), "setting": name, "shape": shape, "image_size": image_size,
               "images": n_images, "dtype": str(seg.dtype).replace("torch.", ""), "repeats": repeats,
               "triton_available": attention._triton(dev) is not None, "runs": []}
    print(common.describe_machine(results["machine"]), flush=True)
    flops = flops_per_pair(seg, seg.config)
    results["tflop_per_pair"] = flops / 1e12
    results["flop_bound_s_per_image"] = flops / (peak_tflops * 1e12) if dev.type == "cuda" else None
    # (batch, classes, compile): every batch and class count; on a GPU also batch 1 compiled
    variants = [(batch, k, False) for batch in batches for k in class_counts]
    if name == "gpu":
        variants.append((1, min(class_counts), True))
    for batch, k, compiled in variants:
        classes = VOC_CLASSES[:k] if k <= len(VOC_CLASSES) else [f"class {i}" for i in range(k)]
        cfg = seg.config.replace(batch_size=batch, compile=compiled)
        bare = unet_times(seg, images[:batch], classes, cfg, repeats)
        ours = call_times(seg, images, classes, cfg, repeats)
        bare_per_image = (bare["bare_unet_s"] + bare["vae_s"]) / batch
        row = {"batch": batch, "classes": k, "compile": compiled, **bare, "bare_s_per_image": bare_per_image,
               **ours, "ratio_to_bare": ours["s_per_image"] / bare_per_image}
        results["runs"].append(row)
        print(f"  batch {batch}, {k} classes{', compiled' if compiled else ''}: ours {row['s_per_image']:.4f} "
              f"s/image, bare {bare_per_image:.4f}, recording {row['recording_ratio']:.2f}x", flush=True)
        if save is not None:
            save(results)
    results["markdown"] = report(results)
    return results


def report(results: dict) -> str:
    runs = results["runs"]
    text = common.table(
        f"FA-Seg vs the bare UNet + VAE forward ({results['shape']}, {results['image_size']} px, {results['dtype']}, "
        f"{results['images']} images, medians of {results['repeats']}, "
        f"self-attention recorded in torch; Triton kernels {'timed beside it' if results['triton_available'] else 'unavailable'})",
        ["batch", "classes", "compile", "bare s/image", "ours s/image", "ratio to bare", "recorded / bare UNet",
         "outside UNet+VAE", "peak GB", "FLOP bound s/image"],
        [[r["batch"], r["classes"], r["compile"], r["bare_s_per_image"], r["s_per_image"], f"{r['ratio_to_bare']:.2f}×",
          f"{r['recording_ratio']:.2f}×", f"{100 * r['outside_unet_vae_share']:.1f} %", r["peak_allocated_gb"],
          results["flop_bound_s_per_image"]] for r in runs],
    )
    text += common.table(
        "Stages per image (s): text, images (resize + VAE), unet (recorded), after (class maps, HARD, labels, copy)",
        ["batch", "classes", "compile", *STAGES, "total", "bare UNet", "VAE", "recorded UNet, Triton kernels"],
        [[r["batch"], r["classes"], r["compile"], *(r[s] / results["images"] for s in STAGES), r["s_per_image"],
          r["bare_unet_s"] / r["batch"], r["vae_s"] / r["batch"],
          r["recorded_unet_triton_s"] / r["batch"] if "recorded_unet_triton_s" in r else None] for r in runs],
    )
    return text


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_true", help="tiny model, 64 px, 2 images: a few seconds anywhere")
    mode.add_argument("--cpu", action="store_true", help="the CPU setting: tiny model, 512 px, 8 photos, batch 4")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per number (median); 3, 1 with --smoke")
    p.add_argument("--threads", type=int, default=None, help="torch threads (the CPU setting uses 1)")
    p.add_argument("--peak-tflops", type=float, default=790.0, help="the card's dense fp16 peak, for the FLOP bound")
    p.add_argument("--out", type=Path, default=common.OUT_DIR)
    args = p.parse_args(argv)
    name = "smoke" if args.smoke else "cpu" if args.cpu or not torch.cuda.is_available() else "gpu"
    repeats = args.repeats or (1 if name == "smoke" else 3)
    threads = args.threads or (1 if name == "cpu" else None)
    file_name = NAME if name == "gpu" else f"{NAME}_{name}"
    results = measure(name, repeats, args.peak_tflops, threads,
                      save=lambda partial: common.write_json(file_name, partial, args.out))
    common.write_json(file_name, results, args.out)
    return results


if __name__ == "__main__":
    main()

"""Time per image of captioning, tagging and caption matching with tiny random models on CPU.

Baselines in the same run: batched vs one-image-at-a-time captioning and tagging, tagging with
cached vs freshly computed text embeddings, and matching with a warm vs cold term index.

    python -m benchmarks.bench_candidates
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from faseg_core.candidates import Captioner, CaptionerConfig, Tagger, TaggerConfig, Vocabulary, match_caption
from faseg_core.candidates import matching
from faseg_core.testing.candidates import build_tiny_blip, build_tiny_clip

OUT = Path(__file__).resolve().parent / "out" / "candidates.json"
NUM_IMAGES = 16
REPEATS = 3
CAPTIONS = [
    "a man and two dogs asleep on a couch",
    "people sitting at a dining table with a tv and potted plants",
    "two buses and three motorcycles near a train station",
    "an airplane parked on the tarmac at an airport",
] * 64


def best_of(fn, repeats: int = REPEATS) -> float:
    """Fastest wall time of `repeats` runs, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rng = np.random.RandomState(0)
    images = [rng.randint(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(NUM_IMAGES)]
    voc = Vocabulary.coco_object()
    rows = []

    with tempfile.TemporaryDirectory() as folder:
        captioner = Captioner.from_pretrained(str(build_tiny_blip(Path(folder) / "blip")),
                                              config=CaptionerConfig(max_new_tokens=12, batch_size=NUM_IMAGES))
        tagger = Tagger.from_pretrained(str(build_tiny_clip(Path(folder) / "clip")), config=TaggerConfig(batch_size=NUM_IMAGES))

        batched = best_of(lambda: captioner(images))
        single = best_of(lambda: [captioner([im]) for im in images])
        rows.append(("captioning (BLIP, tiny)", "batched", "one at a time", batched, single))

        tagger.scores(images[:1], voc)  # warm the text cache
        batched = best_of(lambda: tagger.scores(images, voc))
        single = best_of(lambda: [tagger.scores([im], voc) for im in images])
        rows.append(("tagging (CLIP, tiny, 80 classes)", "batched", "one at a time", batched, single))

        cached = best_of(lambda: tagger.scores(images, voc))

        def uncached():
            tagger.clear_cache()
            tagger.scores(images, voc)

        rows.append(("tagging: text embeddings", "cached", "recomputed", cached, best_of(uncached)))

    match_caption(CAPTIONS[0], voc)
    warm = best_of(lambda: [match_caption(c, voc) for c in CAPTIONS])

    def cold():
        matching._term_index.cache_clear()
        for c in CAPTIONS:
            match_caption(c, voc)
            matching._term_index.cache_clear()

    rows.append(("caption matching (80 classes)", "index cached", "index rebuilt", warm, best_of(cold)))

    counts = {"caption matching (80 classes)": len(CAPTIONS)}
    results = []
    print("| step | ours | baseline | ours ms/image | baseline ms/image | speed-up |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    for step, ours, base, t_ours, t_base in rows:
        n = counts.get(step, NUM_IMAGES)
        ms_ours, ms_base = 1e3 * t_ours / n, 1e3 * t_base / n
        print(f"| {step} | {ours} | {base} | {ms_ours:.2f} | {ms_base:.2f} | {t_base / t_ours:.1f}x |")
        results.append({"step": step, "ours": ours, "baseline": base, "items": n,
                        "ours_ms_per_item": ms_ours, "baseline_ms_per_item": ms_base, "speedup": t_base / t_ours})

    report = {
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "machine": platform.platform(),
        "images": NUM_IMAGES,
        "repeats": REPEATS,
        "results": results,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {OUT}")
    return report


if __name__ == "__main__":
    main()

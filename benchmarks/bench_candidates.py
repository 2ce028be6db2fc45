"""Time per image of captioning, tagging and caption matching with tiny random models on CPU.

Baselines in the same run: batched vs one-image-at-a-time captioning and tagging, tagging with
cached vs freshly computed text embeddings, and matching with a warm vs cold term index.

    python -m benchmarks.bench_candidates [--quick] [--out DIR]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from faseg_core.candidates import Captioner, CaptionerConfig, Tagger, TaggerConfig, Vocabulary, match_caption
from faseg_core.candidates import matching
from faseg_core.testing.candidates import build_tiny_blip, build_tiny_clip

from . import common

NAME = "candidates"
NUM_IMAGES = 16
REPEATS = 3
CAPTIONS = [
    "a man and two dogs asleep on a couch",
    "people sitting at a dining table with a tv and potted plants",
    "two buses and three motorcycles near a train station",
    "an airplane parked on the tarmac at an airport",
] * 64


def best_of(fn, repeats: int) -> float:
    """Fastest wall time of `repeats` runs, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None) -> dict:
    args = common.parser(__doc__.split("\n")[0]).parse_args(argv)
    num_images, repeats = (4, 1) if args.quick else (NUM_IMAGES, REPEATS)
    torch.manual_seed(0)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rng = np.random.RandomState(0)
    images = [rng.randint(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(num_images)]
    voc = Vocabulary.coco_object()
    rows = []

    with tempfile.TemporaryDirectory() as folder:
        captioner = Captioner.from_pretrained(str(build_tiny_blip(Path(folder) / "blip")),
                                              config=CaptionerConfig(max_new_tokens=12, batch_size=num_images))
        tagger = Tagger.from_pretrained(str(build_tiny_clip(Path(folder) / "clip")), config=TaggerConfig(batch_size=num_images))

        batched = best_of(lambda: captioner(images), repeats)
        single = best_of(lambda: [captioner([im]) for im in images], repeats)
        rows.append(("captioning (BLIP, tiny)", "batched", "one at a time", batched, single))

        tagger.scores(images[:1], voc)  # warm the text cache
        batched = best_of(lambda: tagger.scores(images, voc), repeats)
        single = best_of(lambda: [tagger.scores([im], voc) for im in images], repeats)
        rows.append(("tagging (CLIP, tiny, 80 classes)", "batched", "one at a time", batched, single))

        cached = best_of(lambda: tagger.scores(images, voc), repeats)

        def uncached():
            tagger.clear_cache()
            tagger.scores(images, voc)

        rows.append(("tagging: text embeddings", "cached", "recomputed", cached, best_of(uncached, repeats)))

    match_caption(CAPTIONS[0], voc)
    warm = best_of(lambda: [match_caption(c, voc) for c in CAPTIONS], repeats)

    def cold():
        matching._term_index.cache_clear()
        for c in CAPTIONS:
            match_caption(c, voc)
            matching._term_index.cache_clear()

    rows.append(("caption matching (80 classes)", "index cached", "index rebuilt", warm, best_of(cold, repeats)))

    counts = {"caption matching (80 classes)": len(CAPTIONS)}
    results = []
    for step, ours, base, t_ours, t_base in rows:
        n = counts.get(step, num_images)
        results.append({"step": step, "ours": ours, "baseline": base, "items": n,
                        "ours_ms_per_item": 1e3 * t_ours / n, "baseline_ms_per_item": 1e3 * t_base / n,
                        "speedup": t_base / t_ours})
    common.table(
        "Candidates: time per item, tiny models on " + ("GPU" if torch.cuda.is_available() else "CPU"),
        ["step", "ours", "baseline", "ours ms/item", "baseline ms/item", "speed-up"],
        [[r["step"], r["ours"], r["baseline"], r["ours_ms_per_item"], r["baseline_ms_per_item"],
          f"{r['speedup']:.1f}x"] for r in results],
    )
    report = {"machine": common.machine(), "images": num_images, "repeats": repeats, "results": results}
    common.write_json(NAME, report, args.out)
    return report


if __name__ == "__main__":
    main()

"""The protocol's report as Markdown (the CLI prints it) and as a JSON file."""

import json
import os

from ..fields import error_field


def to_markdown(report):
    """Per-class IoU, mIoU, the threshold sweep and the timing of a report, in Markdown."""
    fmt = lambda v: "–" if v is None else "%.1f" % v  # noqa: E731
    lines = [
        "## FA-Seg on %s (%d images, candidates: %s, threshold %.2f)"
        % (report["title"], report["num_evaluated"], report["classes_from"], report["threshold"]),
        "",
        "| class | IoU (%) |",
        "|---|---:|",
    ]
    lines += ["| %s | %s |" % (c, fmt(v)) for c, v in report["class_iou"].items()]
    paper = report["paper_miou"]["ground_truth" if report["classes_from"] == "gt" else "candidates"]
    lines += ["| **mIoU** | **%s** |" % fmt(report["miou"]), "", "paper: %.1f" % paper, ""]
    if report["sweep"]:
        lines += ["| threshold | " + " | ".join(report["sweep"]) + " |",
                  "|---|" + "---:|" * len(report["sweep"]),
                  "| mIoU (%) | " + " | ".join(fmt(v) for v in report["sweep"].values()) + " |", ""]
    t = report["timing"]
    if t["processed"]:
        mem = t["gpu_max_memory_bytes"]
        lines.append("%d images segmented now: %.3f s/image in the model, %.3f s/image in all%s"
                     % (t["processed"], t["model_s_per_image"], t["wall_s_per_image"],
                        "" if mem is None else ", peak GPU memory %.2f GB" % (mem / 1e9)))
    if report["num_without_mask"]:
        lines.append("%d images have no mask (see the '%s' field)"
                     % (report["num_without_mask"], error_field(report["label_field"])))
    return "\n".join(lines)


def write_report(report, folder):
    """Writes ``<folder>/<dataset>-<label_field>.json`` and ``.md``; returns the JSON path."""
    os.makedirs(folder, exist_ok=True)
    stem = os.path.join(folder, "%s-%s" % (report["dataset"], report["label_field"]))
    with open(stem + ".json", "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    with open(stem + ".md", "w", encoding="utf-8") as f:
        f.write(to_markdown(report) + "\n")
    return stem + ".json"

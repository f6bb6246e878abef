"""What a segmentation evaluation leaves in its output folder (a study phase's, or `eval/`).

    seg.json                    first backbone: summary (mIoU / mAcc / aAcc, %), per-class IoU / Acc, training, config
    seg_<name>.json             every further backbone (e.g. seg_random_init.json)
    seg_examples.png            image / label / prediction of each backbone, in the dataset palette
and a "## Semantic segmentation" section of the run's report.md (replaced when present).

Per-class values absent from labels and predictions are NaN in the metric and `null` in JSON.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from pretrainlab.run_dir import write_text

SECTION_TITLE = "## Semantic segmentation"


def _finite_or_none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def seg_result(summary: dict[str, Any], class_names: tuple[str, ...], extra: dict[str, Any]) -> dict[str, Any]:
    """JSON-ready result from `SegmentationMetric.summary()` (percentages) plus `extra` fields."""
    per_class = {
        name: {"IoU": _finite_or_none(iou), "Acc": _finite_or_none(acc)}
        for name, iou, acc in zip(class_names, summary["IoU"], summary["Acc"])
    }
    means = {key: _finite_or_none(summary[key]) for key in ("mIoU", "mAcc", "aAcc")}
    return {"summary": means, "per_class": per_class, **extra}


def colourise(label: np.ndarray, palette: tuple[tuple[int, int, int], ...]) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8 RGB; ignored / out-of-range pixels are black."""
    table = np.zeros((256, 3), dtype=np.uint8)
    table[: len(palette)] = np.asarray(palette, dtype=np.uint8)
    return table[np.clip(label, 0, 255).astype(np.uint8)]


def plot_seg_examples(
    images: list[np.ndarray],
    labels: list[np.ndarray],
    predictions: dict[str, list[np.ndarray]],
    palette: tuple[tuple[int, int, int], ...],
    path: Path,
) -> None:
    """One row per example: image (H, W, 3) RGB uint8 | label | each backbone's prediction."""
    rows = len(images)
    if rows == 0:
        return
    columns = [("image", None), ("label", labels)] + [(f"{name} prediction", preds) for name, preds in predictions.items()]
    fig, axes = plt.subplots(rows, len(columns), figsize=(2.2 * len(columns), 2.2 * rows), squeeze=False)
    for row in range(rows):
        for col, (title, maps) in enumerate(columns):
            ax = axes[row][col]
            ax.imshow(images[row] if maps is None else colourise(maps[row], palette), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title.replace("_", " "), fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def seg_report_section(results: dict[str, dict[str, Any]], plot_path: str | None) -> str:
    """Markdown: summary per backbone, per-class IoU / Acc table, the examples figure."""
    names = list(results)
    first = results[names[0]]
    config = first.get("config", {})
    lines = [
        SECTION_TITLE,
        "",
        (
            f"Head **{config.get('head', {}).get('name')}**, mode **{config.get('mode')}**, "
            f"{config.get('iterations')} iterations, inference {config.get('inference')}."
        ),
        "",
        "| backbone | mIoU | mAcc | aAcc | train s |",
        "|---|---|---|---|---|",
    ]
    for name, result in results.items():
        s = result["summary"]
        seconds = result.get("train", {}).get("seconds")
        lines.append(
            f"| {name} | {_fmt(s['mIoU'])} | {_fmt(s['mAcc'])} | {_fmt(s['aAcc'])} | "
            f"{'' if seconds is None else f'{seconds:.1f}'} |"
        )
    lines += ["", "| class | " + " | ".join(f"{n} IoU | {n} Acc" for n in names) + " |"]
    lines.append("|---" * (1 + 2 * len(names)) + "|")
    for class_name in first["per_class"]:
        cells = []
        for name in names:
            values = results[name]["per_class"].get(class_name, {})
            cells += [_fmt(values.get("IoU")), _fmt(values.get("Acc"))]
        lines.append(f"| {class_name} | " + " | ".join(cells) + " |")
    if plot_path:
        lines += ["", f"![segmentation examples]({plot_path})"]
    return "\n".join(lines) + "\n"


def write_report_section(run_dir: Path, section: str) -> Path:
    """Put `section` into run_dir/report.md, replacing an earlier segmentation section (created if missing)."""
    path = run_dir / "report.md"
    text = path.read_text() if path.exists() else f"# Run `{run_dir.name}`\n"
    start = text.find(SECTION_TITLE)
    if start >= 0:
        end = text.find("\n## ", start + len(SECTION_TITLE))
        text = text[:start] + (text[end + 1 :] if end >= 0 else "")
    text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, text)
    return path

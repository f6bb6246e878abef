"""Classification scores as a reader sees them: the kNN tables (Markdown) and confusion-matrix figures.

`knn_markdown` turns the JSON-ready scores of `eval.knn_eval.knn_scores`, one entry per evaluated
backbone (`pretrained`, `random_init`), into one table per backbone with a row per k: k, T, top-1 and
top-5 in %, macro precision / recall / F1 as fractions; the primary k (the one `knn_top1` reports)
is marked. `plot_confusion` draws a (C, C) confusion matrix row-normalised, so each row shows where
the images of one true class went.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

KNN_COLUMNS = ("k", "T", "top-1", "top-5", "precision", "recall", "F1")
MAX_ANNOTATED_CLASSES = 12  # above this the counts no longer fit in the cells
PRIMARY = "(primary)"
SCORE_KEYS = ("k", "temperature", "per_k", "num_train", "num_val")
ROW_KEYS = ("top1", "top5", "precision", "recall", "f1")


def _check_scores(scores: dict[str, Any], name: str) -> None:
    missing = [key for key in SCORE_KEYS if key not in scores]
    missing += [f"per_k.{k}.{key}" for k, row in scores.get("per_k", {}).items() for key in ROW_KEYS if key not in row]
    if missing:
        raise ValueError(f"kNN scores of {name} lack {', '.join(missing)}; expected the output of "
                         "eval.knn_eval.knn_scores")  # fmt: skip


def knn_table(scores: dict[str, Any], name: str = "the backbone") -> str:
    """One backbone's kNN scores (`knn_scores` output) as a Markdown table, a row per k, the primary k marked."""
    _check_scores(scores, name)
    lines = ["| " + " | ".join(KNN_COLUMNS) + " |", "|" + "---:|" * len(KNN_COLUMNS)]
    for k in sorted(scores["per_k"], key=int):
        row = scores["per_k"][k]
        marked = f"{k} {PRIMARY}" if int(k) == int(scores["k"]) else str(k)
        cells = [marked, f"{scores['temperature']:g}", f"{row['top1']:.2f}", f"{row['top5']:.2f}",
                 f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{row['f1']:.4f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def knn_markdown(results: dict[str, dict[str, Any]], confusion_images: dict[str, str] | None = None) -> str:
    """knn.md: a section per backbone with its table (`knn_table`) and, when given, its confusion image
    (a path relative to the Markdown file)."""
    lines = [
        "# kNN (weighted, DINO protocol)",
        "",
        (
            "Weighted kNN (Wu et al. 2018, as in DINO's `eval_knn.py`) of the val images against the train bank, "
            "on L2-normalised pooled features. top-1 / top-5 in %; precision / recall / F1 are macro averages over "
            f"the classes in the val labels or the predictions, as fractions. {PRIMARY} marks the k `knn_top1` "
            "reports."
        ),
    ]
    for name, scores in results.items():
        table = knn_table(scores, name)
        lines += ["", f"## {name}", "", f"{scores['num_train']} train (bank) and {scores['num_val']} val images.",
                  "", table.rstrip("\n")]  # fmt: skip
        if confusion_images and name in confusion_images:
            lines += ["", f"![{name} confusion matrix]({confusion_images[name]})"]
    return "\n".join(lines) + "\n"


def row_normalised(confusion: np.ndarray) -> np.ndarray:
    """(C, C) counts -> each row divided by its sum (float64); a row without images stays 0."""
    counts = np.asarray(confusion, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)  # (C, 1)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def plot_confusion(confusion: np.ndarray | Sequence[Sequence[int]], class_names: Sequence[str], path: Path, *,
                   title: str) -> None:  # fmt: skip
    """Row-normalised confusion matrix (rows = true class, columns = predicted class) with the class names on
    both axes and, for at most 12 classes, the counts in the cells; written to `path` (the figure is closed
    even when writing fails)."""
    counts = np.asarray(confusion)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"expected a square (C, C) confusion matrix, got shape {counts.shape}")
    num_classes = counts.shape[0]
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for a {num_classes} x {num_classes} confusion matrix")
    fractions = row_normalised(counts)
    side = min(3.0 + 0.45 * num_classes, 40.0)
    font = 8 if num_classes <= 30 else 5
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    try:
        image = ax.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
        if num_classes <= MAX_ANNOTATED_CLASSES:
            for row in range(num_classes):
                for column in range(num_classes):
                    color = "white" if fractions[row, column] > 0.5 else "black"
                    ax.text(column, row, str(int(counts[row, column])), ha="center", va="center", fontsize=8,
                            color=color)  # fmt: skip
        ax.set_xticks(range(num_classes), list(class_names), rotation=45, ha="right", fontsize=font)
        ax.set_yticks(range(num_classes), list(class_names), fontsize=font)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(title, fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")  # as tall as the axes
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)

"""mIoU during pretraining (W4): the curve a run's `seg` phases trace, and its plot.

A `seg` phase's result holds `epoch` and `seg_miou: {backbone: mIoU}`. The curve takes from every
phase the pretrained backbone's mIoU at the phase's epoch or, for a phase that scored the random
init alone (W4's epoch-0 point), the random init's; a later phase at the same epoch wins. A phase
that scored both backbones at one epoch gives the random init as a reference level instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

Curve = list[tuple[int, float]]  # (pretraining epoch, mIoU %), ascending epochs
MIOU_PLOT = "miou_vs_epoch.png"  # its file name in a run's or a sweep's plots/


def _score(scores: dict[str, Any], backbone: str) -> float | None:
    value = scores.get(backbone)
    return float(value) if isinstance(value, (int, float)) else None


def seg_curve(phases: list[dict[str, Any]]) -> Curve:
    """mIoU by pretraining epoch from the results of finished phases (any kinds, in phase order)."""
    points: dict[int, float] = {}
    for phase in phases:
        if phase["kind"] != "seg":
            continue
        scores = phase.get("seg_miou") or {}
        value = _score(scores, "pretrained") if "pretrained" in scores else _score(scores, "random_init")
        if value is not None:
            points[int(phase["epoch"])] = value
    return sorted(points.items())


def seg_random_init_reference(phases: list[dict[str, Any]]) -> float | None:
    """The random init's mIoU from the last `seg` phase that scored it beside the pretrained backbone."""
    reference = None
    for phase in phases:
        scores = phase.get("seg_miou") or {}
        if phase["kind"] == "seg" and "pretrained" in scores and _score(scores, "random_init") is not None:
            reference = _score(scores, "random_init")
    return reference


def plot_miou_vs_epoch(curves: dict[str, Curve], path: Path, references: dict[str, float] | None = None) -> None:
    """One line per curve (legend: its name), one dashed horizontal line per reference level."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for name, curve in curves.items():
        if curve:
            epochs, values = zip(*curve)
            ax.plot(epochs, values, marker="o", ms=4, label=name)
    for name, value in (references or {}).items():
        ax.axhline(value, color="gray", ls="--", lw=1, label=name)
    starts_at_zero = any(curve and curve[0][0] == 0 for curve in curves.values())
    ax.set_xlabel("pretraining epoch" + (" (0 = random init)" if starts_at_zero else ""))
    ax.set_ylabel("mIoU (%)")
    ax.set_title("Segmentation mIoU during pretraining")
    epochs = sorted({epoch for curve in curves.values() for epoch, _ in curve})
    if len(epochs) <= 12:
        ax.set_xticks(epochs)  # the evaluated epochs
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)

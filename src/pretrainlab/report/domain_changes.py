"""Detected domain changes against the true ones (W2): the scores and the figure, from the per-step log.

The online runner logs one record per training step in `adapt/metrics.jsonl`: {"step", "domain"} and,
with a domain-shift detector, {"detector_signal", "domain_change", "trained"}. A true boundary is a
step whose domain differs from the previous step's (the run's start is not one); the detector's
events are the steps with `domain_change`. `eval/shift_detector.score_detections` gives the delay
of each boundary's first detection and the false alarms; the figure draws the signal over the steps
with the true boundaries (dashed), the detections (red) and the steps that trained (shaded).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from pretrainlab.eval.shift_detector import score_detections
from pretrainlab.run_dir import read_jsonl

DETECTOR_PLOT = "detector.png"  # in the run's plots/


def step_records(metrics_path: Path) -> list[dict[str, Any]]:
    """The per-step domain records of an online run, by step (a resumed step's last record wins)."""
    by_step = {int(r["step"]): r for r in read_jsonl(metrics_path) if "domain" in r} if metrics_path.is_file() else {}
    return [by_step[step] for step in sorted(by_step)]


def true_boundaries(records: Sequence[dict[str, Any]]) -> list[int]:
    """Steps whose domain differs from the previous step's."""
    return [b["step"] for a, b in zip(records, records[1:], strict=False) if b["domain"] != a["domain"]]


def detection_summary(records: Sequence[dict[str, Any]], window: int) -> dict[str, Any]:
    """`score_detections` of the logged events against the true boundaries, with both step lists and the number
    of steps that trained."""
    events = [r["step"] for r in records if r.get("domain_change")]
    boundaries = true_boundaries(records)
    return {**score_detections(events, boundaries, window), "events": events, "boundaries": boundaries,
            "trained_steps": sum(bool(r.get("trained", True)) for r in records), "steps": len(records)}  # fmt: skip


def plot_detections(records: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    """The detector's signal over the steps, true boundaries dashed, detections red, training steps shaded."""
    steps = [r["step"] for r in records]
    fig, ax = plt.subplots(figsize=(10, 3.2))
    ax.plot(steps, [r.get("detector_signal") for r in records], lw=0.8, color="tab:blue", label="signal")
    for step in true_boundaries(records):
        ax.axvline(step, color="gray", ls="--", lw=0.8)
    for record in records:
        if record.get("domain_change"):
            ax.axvline(record["step"], color="red", lw=1.5)
        if record.get("trained"):
            ax.axvspan(record["step"] - 0.5, record["step"] + 0.5, color="tab:green", alpha=0.12, lw=0)
    ax.set_xlabel("step (dashed: true domain change; red: detected; green: trained)")
    ax.set_ylabel("detector signal")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)

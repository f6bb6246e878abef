"""What a finished run shows a person: plots/*.png and report.md from metrics.jsonl and eval/*.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from pretrainlab.engine.jsonl_logger import read_metrics


def plot_loss(metrics: list[dict[str, Any]], path: Path) -> None:
    points = [(m["step"], m["train/loss"]) for m in metrics if m.get("train/loss") is not None]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if points:
        steps, losses = zip(*points)
        ax.plot(steps, losses, lw=1)
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss")
    ax.set_title("pretraining loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_knn(curve: list[tuple[int, float]], random_init: float | None, path: Path) -> None:
    """kNN top-1 of the pretrained backbone per epoch, against the random-init copy."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if curve:
        epochs, scores = zip(*curve)
        ax.plot(epochs, scores, marker="o", label="pretrained")
    if random_init is not None:
        ax.axhline(random_init, color="gray", ls="--", label="random init")
    ax.set_xlabel("epoch")
    ax.set_ylabel("kNN top-1 (%)")
    ax.set_title("kNN accuracy during pretraining")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def knn_curve(metrics: list[dict[str, Any]], final_epoch: int, final_top1: float | None) -> list[tuple[int, float]]:
    curve = [(int(m["epoch"]), float(m["eval/knn_top1"])) for m in metrics if m.get("eval/knn_top1") is not None]
    if final_top1 is not None:
        curve.append((final_epoch, final_top1))
    return sorted(dict(curve).items())


def write_run_report(run_dir: Path, summary: dict[str, Any]) -> Path:
    """Plots and report.md of a run; `summary` is what summary.json holds."""
    metrics = read_metrics(run_dir / "metrics.jsonl")
    knn = summary.get("knn_top1", {})
    curve = knn_curve(metrics, summary.get("epochs", 0), knn.get("pretrained"))
    plot_loss(metrics, run_dir / "plots" / "loss.png")
    plot_knn(curve, knn.get("random_init"), run_dir / "plots" / "knn.png")

    lines = [
        f"# Run `{run_dir.name}`",
        "",
        (
            f"- method: **{summary.get('method')}**, backbone: **{summary.get('backbone')}**, "
            f"epochs: {summary.get('epochs')}"
        ),
        f"- wall time: {summary.get('wall_time_s', 0):.0f} s",
        "",
        "## kNN (weighted, T = 0.07, DINO protocol)",
        "",
        "| k | pretrained top-1 | random init top-1 |",
        "|---|---|---|",
    ]
    per_k_pre = summary.get("knn_per_k", {}).get("pretrained", {})
    per_k_rand = summary.get("knn_per_k", {}).get("random_init", {})
    for k in sorted(per_k_pre, key=int):
        rand = per_k_rand.get(k, {}).get("top1")
        lines.append(f"| {k} | {per_k_pre[k]['top1']:.2f} | {'' if rand is None else f'{rand:.2f}'} |")
    lines += [
        "",
        f"Gain over random init at k = 20: **{knn.get('pretrained', 0) - knn.get('random_init', 0):+.2f}** points.",
        "",
        "![loss](plots/loss.png)",
        "",
        "![knn](plots/knn.png)",
        "",
    ]
    if (run_dir / "plots" / "tsne.png").exists():
        lines += ["![t-SNE](plots/tsne.png)", ""]
    lines += ["## Summary", "", "```json", json.dumps(summary, indent=2), "```", ""]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines))
    return path

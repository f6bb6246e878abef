"""What a finished study shows a person: plots/*.png and report.md from metrics.jsonl and its phases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from pretrainlab.eval.segmentation_report import seg_report_section
from pretrainlab.run_dir import RunDir, read_json


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


def knn_curve(metrics: list[dict[str, Any]], phases: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """kNN top-1 by epoch: the checks during pretraining (metrics) and the `knn` phases (these win)."""
    curve = [(int(m["epoch"]), float(m["eval/knn_top1"])) for m in metrics if m.get("eval/knn_top1") is not None]
    curve += [(int(p["epoch"]), float(p["knn_top1"]["pretrained"])) for p in phases if p["kind"] == "knn"]
    return sorted(dict(curve).items())


def seg_section(run: RunDir, phases: list[dict[str, Any]]) -> str | None:
    """The report section of the last `seg` phase, or None without one."""
    seg_phases = [p for p in phases if p["kind"] == "seg"]
    if not seg_phases:
        return None
    folder = run.path / seg_phases[-1]["dir"]
    results = {}
    for path in sorted(folder.glob("seg*.json"), key=lambda p: p.name != "seg.json"):
        result = read_json(path)
        results[result["backbone"]] = result
    return seg_report_section(results, seg_phases[-1].get("seg_examples")) if results else None


def write_run_report(run: RunDir, summary: dict[str, Any]) -> Path:
    """Plots and report.md of a study; `summary` is what summary.json holds."""
    run_dir = run.path
    metrics = run.read_metrics()
    phases = summary.get("phases", [])
    knn = summary.get("knn_top1", {})
    plot_loss(metrics, run.plots / "loss.png")
    plot_knn(knn_curve(metrics, phases), knn.get("random_init"), run.plots / "knn.png")

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
    if summary.get("tsne"):
        lines += [f"![t-SNE]({summary['tsne']})", ""]
    lines += ["## Phases", "", "| phase | epoch | result | seconds |", "|---|---:|---|---:|"]
    for phase in phases:
        shown = {k: v for k, v in phase.items() if k.endswith(("top1", "miou"))}
        lines.append(f"| {phase['phase']} | {phase.get('epoch', '')} | {json.dumps(shown)} | {phase['seconds']:.0f} |")
    lines.append("")
    section = seg_section(run, phases)
    if section:
        lines += [section]
    lines += ["## Summary", "", "```json", json.dumps({k: v for k, v in summary.items() if k != "phases"}, indent=2),
              "```", ""]  # fmt: skip
    run.report.write_text("\n".join(lines))
    return run.report

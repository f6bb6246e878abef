"""What a finished study shows a person: plots/*.png and report.md from metrics.jsonl and its phases."""

from __future__ import annotations

import json
import posixpath
import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from pretrainlab.eval.segmentation_report import seg_report_section
from pretrainlab.report.seg_curve import MIOU_PLOT, plot_miou_vs_epoch, seg_curve, seg_random_init_reference
from pretrainlab.run_dir import RunDir, read_json, write_text


def save_curve(fig: Any, ax: Any, path: Path, *, xlabel: str, ylabel: str, title: str, use_legend: bool) -> None:
    """Label, grid and write a one-axis curve figure to `path` (PNG), then close it."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if use_legend:
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_loss(metrics: list[dict[str, Any]], path: Path) -> None:
    points = [(m["step"], m["train/loss"]) for m in metrics if m.get("train/loss") is not None]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if points:
        steps, losses = zip(*points)
        ax.plot(steps, losses, lw=1)
    save_curve(fig, ax, path, xlabel="iteration", ylabel="training loss", title="pretraining loss", use_legend=False)


def plot_seg_losses(losses: dict[str, list[tuple[int, float]]], path: Path) -> None:
    """Segmentation finetuning loss per iteration, a line per finetuned backbone."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for backbone, points in losses.items():
        steps, values = zip(*points)
        ax.plot(steps, values, lw=1, label=backbone)
    save_curve(fig, ax, path, xlabel="iteration", ylabel="training objective", title="segmentation finetuning loss",
               use_legend=True)  # fmt: skip


def plot_knn(curve: list[tuple[int, float]], random_init: float | None, path: Path) -> None:
    """kNN top-1 of the pretrained backbone per epoch, against the random-init copy."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if curve:
        epochs, scores = zip(*curve)
        ax.plot(epochs, scores, marker="o", label="pretrained")
    if random_init is not None:
        ax.axhline(random_init, color="gray", ls="--", label="random init")
    save_curve(fig, ax, path, xlabel="epoch", ylabel="kNN top-1 (%)", title="kNN accuracy during pretraining",
               use_legend=True)  # fmt: skip


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


def knn_section(run: RunDir, summary: dict[str, Any], curve: list[tuple[int, float]]) -> str | None:
    """kNN by epoch (plots/knn.png), the last `knn` phase's table of every k (k, T, top-1 / 5, precision,
    recall, F1) and confusion matrices, and its t-SNE; None for a run without kNN scores (e.g. W4's)."""
    knn = summary.get("knn_top1", {})
    if not knn and not curve:
        return None
    plot_knn(curve, knn.get("random_init"), run.plots / "knn.png")
    lines = ["## kNN (weighted, DINO protocol)", ""]
    if "pretrained" in knn and "random_init" in knn:
        lines += [f"Gain over random init at the primary k: **{knn['pretrained'] - knn['random_init']:+.2f}** points.",
                  ""]  # fmt: skip
    lines += ["![knn](plots/knn.png)", ""]
    if summary.get("knn_table") and (run.path / summary["knn_table"]).is_file():
        lines += [included_markdown(run.path / summary["knn_table"], run.path), ""]
    if summary.get("tsne"):
        lines += [f"![t-SNE]({summary['tsne']})", ""]
    return "\n".join(lines)


def included_markdown(path: Path, run_root: Path) -> str:
    """The Markdown file `path` as a part of `run_root`/report.md: its top heading level becomes `###` (one below
    the report's sections), and its relative image / file links (relative to the file) become relative to
    `run_root`."""
    folder = path.parent.relative_to(run_root).as_posix()
    text = path.read_text().strip()
    text = re.sub(r"\]\((?![a-z]+:|/|#)([^)]+)\)",
                  lambda m: f"]({posixpath.normpath(posixpath.join(folder, m.group(1)))})", text)  # fmt: skip
    levels = [len(m.group(1)) for m in re.finditer(r"^(#+) ", text, flags=re.MULTILINE)]
    shift = 3 - min(levels) if levels else 0
    return re.sub(r"^(#+) ", lambda m: "#" * (len(m.group(1)) + shift) + " ", text, flags=re.MULTILINE)


def robustness_section(run: RunDir, summary: dict[str, Any]) -> str | None:
    """The last `robustness` phase's corruption x severity tables and heatmap; None without one."""
    table = summary.get("robustness_table")
    if not table or not (run.path / table).is_file():
        return None
    mean = summary.get("mean_corruption_acc") or {}
    lines = ["## Robustness (CIFAR-10-C corruptions)", ""]
    if mean:
        lines += ["- mean corruption accuracy: " + ", ".join(f"{name} **{value:.2f}**" for name, value in mean.items()),
                  ""]  # fmt: skip
    return "\n".join([*lines, included_markdown(run.path / table, run.path), ""])


def analysis_sections(run: RunDir) -> str | None:
    """Every `pretrainlab analyze` section of the run (analysis/*.md, by name); None without any."""
    paths = sorted(run.analysis_dir.glob("*.md"))
    if not paths:
        return None
    sections = [included_markdown(path, run.path) + "\n" for path in paths]
    return "\n".join(["## Analyses (`pretrainlab analyze`)", "", *sections])


def seg_curve_section(run: RunDir, phases: list[dict[str, Any]]) -> str | None:
    """With `seg` phases at several epochs: the mIoU curve (plots/miou_vs_epoch.png; the random init dashed
    when a phase scored it beside the pretrained backbone) and a table of it; else None."""
    curve = seg_curve(phases)
    if len(curve) < 2:
        return None
    reference = seg_random_init_reference(phases)
    plot_miou_vs_epoch({"pretrained": curve}, run.plots / MIOU_PLOT,
                       {"random init": reference} if reference is not None else None)  # fmt: skip
    lines = ["## Segmentation during pretraining", "", "| epoch | mIoU |", "|---:|---:|"]
    lines += [f"| {epoch}{' (random init)' if epoch == 0 else ''} | {miou:.2f} |" for epoch, miou in curve]
    if reference is not None:
        lines += ["", f"Random init, finetuned the same way: {reference:.2f} mIoU (dashed)."]
    lines += ["", f"![mIoU vs epoch](plots/{MIOU_PLOT})", ""]
    return "\n".join(lines)


def online_section(run: RunDir, summary: dict[str, Any]) -> str | None:
    """Online adaptation (W2): the domains × steps table and heatmap, the detected domain changes against the
    true ones, the step profile and the parameter table; None for a run without `eval/domains.md`."""
    if not (run.eval_dir / "domains.md").is_file():
        return None
    forgetting = summary.get("forgetting") or {}
    lines = ["## Online adaptation", "",
             f"- mean target mIoU: **{summary.get('mean_target_miou') or 0:.2f}**; mean forgetting: "
             f"{sum(forgetting.values()) / max(len(forgetting), 1):.2f} (per domain: best − final mIoU)",
             "", "mIoU per domain (columns) after each domain step (rows; bold: the domain trained on):", "",
             (run.eval_dir / "domains.md").read_text().strip(), "", "![domains](plots/domains.png)", ""]  # fmt: skip
    detection = summary.get("detection")
    if detection:
        delays = ", ".join("missed" if d is None else str(d) for d in detection["delays"])
        lines += ["### Detected domain changes", "",
                  f"- true changes at steps {detection['boundaries']}; detected at {detection['events']}",
                  f"- delay per true change (steps): {delays}; missed {detection['missed']}; false alarms "
                  f"{detection['false_alarms']} (at {detection['false_alarm_steps']})",
                  f"- steps that trained: {detection['trained_steps']} of {detection['steps']}", "",
                  "![detector](plots/detector.png)", ""]  # fmt: skip
    for name, title in (("profile.md", "Cost of one step"), ("params.md", "Parameters")):
        path = run.adapt_dir / name
        if path.is_file():
            text = "\n".join(line.replace("# ", "#### ", 1) if line.startswith("# ") else line
                             for line in path.read_text().strip().splitlines())  # fmt: skip
            lines += [f"### {title}", "", text, ""]
    return "\n".join(lines)


def write_run_report(run: RunDir, summary: dict[str, Any]) -> Path:
    """Plots and report.md of a study; `summary` is what summary.json holds."""
    metrics = run.read_metrics()
    phases = summary.get("phases", [])
    if metrics:
        plot_loss(metrics, run.plots / "loss.png")
    lines = [
        f"# Run `{run.path.name}`",
        "",
        (
            f"- method: **{summary.get('method')}**, backbone: **{summary.get('backbone')}**, "
            f"epochs: {summary.get('epochs')}"
        ),
        f"- wall time: {summary.get('wall_time_s', 0):.0f} s",
        "",
    ]
    lines += [section for section in (knn_section(run, summary, knn_curve(metrics, phases)),
                                       robustness_section(run, summary), seg_curve_section(run, phases),
                                       online_section(run, summary), analysis_sections(run)) if section]  # fmt: skip
    reconstructions = [phase for phase in phases if phase["kind"] == "reconstruct"]
    if reconstructions:
        last = reconstructions[-1]
        lines += [f"## Reconstructions after epoch {last['epoch']}", "",
                  f"![reconstructions]({last['reconstructions']})", ""]  # fmt: skip
    if metrics:
        lines += ["## Pretraining", "", "![loss](plots/loss.png)", ""]
    lines += ["## Phases", "", "| phase | epoch | result | seconds |", "|---|---:|---|---:|"]
    for phase in phases:
        shown = {k: v for k, v in phase.items() if k.endswith(("top1", "miou")) and not isinstance(v, dict)}
        lines.append(f"| {phase['phase']} | {phase.get('epoch', '')} | {json.dumps(shown)} | {phase['seconds']:.0f} |")
    lines.append("")
    section = seg_section(run, phases)
    if section:
        lines += [section]
    lines += ["## Summary", "", "```json", json.dumps({k: v for k, v in summary.items() if k != "phases"}, indent=2),
              "```", ""]  # fmt: skip
    write_text(run.report, "\n".join(lines))
    return run.report


def refresh_run_report(run_dir: Path) -> Path | None:
    """Rewrite report.md of a finished study (one with summary.json), e.g. after `pretrainlab analyze` added a
    section; None for a run without a summary."""
    run = RunDir(run_dir)
    return write_run_report(run, run.read_summary()) if run.has_summary() else None

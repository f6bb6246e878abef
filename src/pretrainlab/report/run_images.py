"""What the study page shows of a run as images: its curves, drawn from its files, and its figures, every PNG
it wrote.

Curves (drawn with the plotting helpers of `run_report.py` and `seg_curve.py`, so they match report.md):

    training loss   per iteration            pretrain/metrics.jsonl `train/loss`
    kNN top-1       per epoch                metrics `eval/knn_top1` and the `knn` phases (random init dashed)
    mIoU            per pretraining epoch    the `seg` phases (W4), with at least two points
    seg finetuning  per iteration            the last `seg` phase's seg*.json `train.losses`, a line per backbone

Figures: every `*.png` below the run folder, by path (t-SNE, confusion matrices, seg examples, heatmaps,
reconstructions, analyses, ...). `checkpoints/`, `logs/`, hidden folders and nested runs are not searched; the
run's own copy of a curve drawn above (plots/loss.png, plots/knn.png, plots/miou_vs_epoch.png) is left out.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from pretrainlab.report.run_report import knn_curve, plot_knn, plot_loss, plot_seg_losses
from pretrainlab.report.scores import ScoreRow, read_seg_results
from pretrainlab.report.seg_curve import MIOU_PLOT, plot_miou_vs_epoch, seg_random_init_reference
from pretrainlab.run_dir import RunDir

NOT_SEARCHED = frozenset({"checkpoints", "logs"})  # Lightning state and TensorBoard / CSV logs: no figures


@dataclass(frozen=True)
class RunCurve:
    """A curve drawn for the page: its title, the file name a run's report.md gives it in plots/, the PNG."""

    title: str
    file_name: str
    png: bytes


def draw_png(draw: Callable[[Path], None]) -> bytes:
    """The PNG a plotting helper that writes to a path (`draw(path)`) produces, without leaving a file."""
    with tempfile.TemporaryDirectory(prefix="pretrainlab_plot_") as folder:
        path = Path(folder) / "plot.png"
        draw(path)
        return path.read_bytes()


def run_curves(row: ScoreRow) -> list[RunCurve]:
    """Training loss, kNN top-1 and mIoU over time of one run; a curve without data is left out."""
    run = RunDir(row.run_dir)
    metrics = run.read_metrics()
    phases = run.phase_results()
    curves = []
    if any(m.get("train/loss") is not None for m in metrics):
        curves.append(RunCurve("training loss", "loss.png", draw_png(lambda path: plot_loss(metrics, path))))
    knn = knn_curve(metrics, phases)
    if knn:
        random_init = row.values.get("knn_top1_random_init")
        curves.append(RunCurve("kNN top-1", "knn.png", draw_png(lambda path: plot_knn(knn, random_init, path))))
    if len(row.seg_curve) >= 2:
        reference = seg_random_init_reference(phases)
        references = {"random init": reference} if reference is not None else None
        png = draw_png(lambda path: plot_miou_vs_epoch({"pretrained": row.seg_curve}, path, references))
        curves.append(RunCurve("mIoU", MIOU_PLOT, png))
    seg_losses = seg_finetuning_losses(run.path, phases)
    if seg_losses:
        png = draw_png(lambda path: plot_seg_losses(seg_losses, path))
        curves.append(RunCurve("segmentation finetuning loss", "seg_loss.png", png))
    return curves


def seg_finetuning_losses(run_dir: Path, phases: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """{backbone: [(iteration, loss)]} of the run's last `seg` phase (empty without one)."""
    folders = [run_dir / phase["dir"] for phase in phases if phase.get("kind") == "seg" and "dir" in phase]
    if not folders:
        return {}
    losses = {backbone: result.get("train", {}).get("losses") or [] for backbone, result in
              read_seg_results(folders[-1]).items()}  # fmt: skip
    return {backbone: [(int(step), float(loss)) for step, loss in points] for backbone, points in losses.items()
            if points}  # fmt: skip


def run_figures(run_dir: Path, skip_dirs: Collection[Path] = (), skip_plots: Collection[str] = ()) -> list[Path]:
    """Every PNG below `run_dir`, sorted by path relative to it.

    Args:
        run_dir: the run folder.
        skip_dirs: folders not searched (resolved paths), e.g. the other runs nested in this one.
        skip_plots: file names left out of the run's `plots/` (the curves the page draws itself).
    """
    skipped = {Path(folder).resolve() for folder in skip_dirs}
    plots = RunDir(run_dir).plots.resolve()
    found = []
    for folder, subfolders, files in os.walk(run_dir):
        subfolders[:] = [sub for sub in subfolders if sub not in NOT_SEARCHED and not sub.startswith(".")
                         and (Path(folder) / sub).resolve() not in skipped]  # fmt: skip
        for name in files:
            path = Path(folder) / name
            if name.lower().endswith(".png") and not (path.parent.resolve() == plots and name in skip_plots):
                found.append(path)
    return sorted(found, key=lambda path: path.relative_to(run_dir).as_posix())

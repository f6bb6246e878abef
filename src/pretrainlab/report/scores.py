"""Score tables over run directories: one row per run, sorted by a metric, as Markdown, CSV
and a rich table. One implementation for `pretrainlab sweep` (a row per variant) and
`pretrainlab report DIR...` (every run below the folders).

A run is any folder holding `summary.json` and/or `eval/*.json`; it is read through
`run_dir.RunDir`. Values come from

    summary.json               knn_top1, knn_f1, linear_top1, mean_corruption_acc: {pretrained, random_init},
                               num_params, wall_time_s;
                               online runs: trainable_params, step_time_s, peak_memory_mb;
                               segmentation: head_params, step_time_s (of the last `seg` phase's training)
    <phase>/result.json        mean_target_miou, the mean over domains of final_miou and of forgetting, of the
                               latest `source` / `adapt` phase (online adaptation, W2), and plots/domains.png
    eval/knn.json              {pretrained | random_init: {top1, f1}}    (evaluations by hand)
    eval/linear.json           {pretrained | random_init: {top1}}
    <phase folder>/result.json knn_top1, knn_f1, linear_top1, mean_corruption_acc of the finished phases (a study
                               without summary.json),
                               the mIoU curve of the `seg` phases (`report/seg_curve.py`)
    seg*.json                  {backbone, summary: {mIoU, mAcc, aAcc}} in the `seg` phase folders, else in
                               eval/: each backbone's from the last folder holding it (mIoU, mAcc, aAcc of
                               `pretrained`, the run's final score; mIoU of `random_init`, W4's epoch 0)

Scores are percentages as the evaluators write them. Tables sort best first (descending; ascending for
the one lower-is-better column, forgetting); runs without the metric come last. When a run has seg scores at several
epochs, scores.md adds a table of every run's mIoU by epoch and plots/miou_vs_epoch.png their curves.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rich.table import Table

from pretrainlab.registry import did_you_mean
from pretrainlab.report.domain_table import DOMAINS_PLOT
from pretrainlab.report.seg_curve import MIOU_PLOT, Curve, plot_miou_vs_epoch, seg_curve
from pretrainlab.run_dir import RunDir, read_json, write_text


@dataclass(frozen=True)
class Column:
    """A value of a score table: `key` in CSV and `--metric`, `title` in Markdown and the terminal."""

    key: str
    title: str
    kind: Literal["score", "count", "seconds", "milliseconds", "megabytes"] = "score"
    lower_is_better: bool = False


COLUMNS: tuple[Column, ...] = (
    Column("knn_top1", "kNN top-1"),
    Column("knn_top1_random_init", "kNN top-1 random init"),
    Column("knn_f1", "kNN F1 (%)"),
    Column("knn_f1_random_init", "kNN F1 (%) random init"),
    Column("linear_top1", "linear top-1"),
    Column("linear_top1_random_init", "linear top-1 random init"),
    Column("mean_corruption_acc", "mean corruption acc."),
    Column("mean_corruption_acc_random_init", "mean corruption acc. random init"),
    Column("mIoU", "mIoU"),
    Column("mAcc", "mAcc"),
    Column("mIoU_random_init", "mIoU random init"),
    Column("mean_target_miou", "mean target mIoU"),
    Column("mean_final_miou", "mean final mIoU"),
    Column("mean_forgetting", "mean forgetting", lower_is_better=True),
    Column("aAcc", "aAcc"),
    Column("num_params", "params", "count"),
    Column("head_params", "head params", "count"),
    Column("trainable_params", "trainable params", "count", lower_is_better=True),
    Column("step_time_s", "step time", "milliseconds", lower_is_better=True),
    Column("peak_memory_mb", "peak memory", "megabytes", lower_is_better=True),
    Column("wall_time_s", "wall time", "seconds"),
)
COLUMN_BY_KEY = {column.key: column for column in COLUMNS}
PAIRED_KEYS = ("knn_top1", "knn_f1", "linear_top1", "mean_corruption_acc")  # {pretrained, random_init} in results
SKIPPED_FOLDERS = frozenset({"pretrain", "checkpoints", "logs", "plots", "eval", "analysis"})


@dataclass(frozen=True)
class ScoreRow:
    """One run: its display name, folder, the values found (keys of `COLUMNS`) and its mIoU by epoch."""

    name: str
    run_dir: Path
    values: dict[str, float]
    seg_curve: Curve = field(default_factory=list)
    reconstructions: Path | None = None  # the last `reconstruct` phase's figure
    domains_plot: Path | None = None  # online adaptation (W2): the domains × steps heatmap


def check_metric(metric: str) -> str:
    """Return `metric` if it is a column key, else raise a ValueError with the known keys."""
    if metric not in COLUMN_BY_KEY:
        known = list(COLUMN_BY_KEY)
        raise ValueError(f"unknown metric '{metric}'{did_you_mean(metric, known)} known: {', '.join(known)}")
    return metric


# ----------------------------------------------------------------------------- reading


def _pair(values: dict[str, float], key: str, scores: Any, field: str | None = None, scale: float = 1.0) -> None:
    """`{pretrained: x, random_init: y}` (x, y numbers, or mappings holding `field`) -> key, key_random_init
    (times `scale`)."""
    if not isinstance(scores, dict):
        return
    for name, suffix in (("pretrained", ""), ("random_init", "_random_init")):
        value = scores.get(name)
        if field is not None and isinstance(value, dict):
            value = value.get(field)
        if isinstance(value, (int, float)):
            values[key + suffix] = scale * float(value)


def read_seg_results(folder: Path) -> dict[str, dict[str, Any]]:
    """{backbone: seg*.json} of the segmentation results in `folder` (a file without `backbone`: seg.json is
    the pretrained one, seg_<name>.json backbone <name>)."""
    found = {}
    for path in sorted(folder.glob("seg*.json")):
        result = read_json(path)
        backbone = result.get("backbone") or ("pretrained" if path.stem == "seg" else path.stem.removeprefix("seg_"))
        found[backbone] = result
    return found


def read_seg_summaries(folder: Path) -> dict[str, dict[str, Any]]:
    """{backbone: {mIoU, mAcc, aAcc}} of the segmentation results in `folder` (`read_seg_results`)."""
    return {backbone: result.get("summary", result) for backbone, result in read_seg_results(folder).items()}


def read_run_scores(run_dir: Path, name: str | None = None) -> ScoreRow:
    """Every known value of one run directory (missing files and keys are simply absent)."""
    run = RunDir(run_dir)
    values: dict[str, float] = {}
    evaluations = run.read_eval()
    _pair(values, "knn_top1", evaluations.get("knn"), "top1")
    _pair(values, "knn_f1", evaluations.get("knn"), "f1", scale=100.0)  # knn.json: a fraction; tables: %
    _pair(values, "linear_top1", evaluations.get("linear"), "top1")
    phases = run.phase_results()
    for phase in phases:  # an unfinished study: what its finished phases hold
        for key in PAIRED_KEYS:
            _pair(values, key, phase.get(key))
        if isinstance(phase.get("mean_target_miou"), (int, float)):  # online adaptation (W2), the latest
            values["mean_target_miou"] = float(phase["mean_target_miou"])
        for key, per_domain in (("mean_final_miou", "final_miou"), ("mean_forgetting", "forgetting")):
            if isinstance(phase.get(per_domain), dict) and phase[per_domain]:
                values[key] = sum(phase[per_domain].values()) / len(phase[per_domain])
    seg: dict[str, dict[str, Any]] = {}
    for folder in [run.path / p["dir"] for p in phases if p["kind"] == "seg"] or [run.eval_dir]:
        seg.update(read_seg_summaries(folder))  # W4: random_init at epoch 0 only, pretrained at every later epoch
    for backbone, suffix, keys in (("pretrained", "", ("mIoU", "mAcc", "aAcc")),
                                   ("random_init", "_random_init", ("mIoU",))):  # fmt: skip
        for key in keys:
            value = seg.get(backbone, {}).get(key)
            if isinstance(value, (int, float)):
                values[key + suffix] = float(value)
    summary = run.read_summary() if run.has_summary() else {}
    for key in PAIRED_KEYS:
        _pair(values, key, summary.get(key))
    for key in ("num_params", "head_params", "trainable_params", "step_time_s", "peak_memory_mb", "wall_time_s"):
        if isinstance(summary.get(key), (int, float)):
            values[key] = float(summary[key])
    figures = [run.path / p["reconstructions"] for p in phases if p["kind"] == "reconstruct"]
    domains_plot = run.plots / DOMAINS_PLOT if (run.plots / DOMAINS_PLOT).is_file() else None
    return ScoreRow(name or run_dir.name, run_dir, values, seg_curve(phases), figures[-1] if figures else None,
                    domains_plot)  # fmt: skip


def is_run_dir(folder: Path) -> bool:
    return (folder / "summary.json").is_file() or any((folder / "eval").glob("*.json")) or bool(
        RunDir(folder).phase_results()
    )


def find_run_dirs(root: Path) -> list[Path]:
    """Run directories at or below `root`, sorted (checkpoints/, logs/, plots/, eval/ are not searched)."""
    found = []
    for folder, subfolders, _ in os.walk(root):
        subfolders[:] = sorted(sub for sub in subfolders if sub not in SKIPPED_FOLDERS and not sub.startswith("."))
        if is_run_dir(Path(folder)):
            found.append(Path(folder))
    return found


def collect_runs(roots: Sequence[Path]) -> list[ScoreRow]:
    """A row per run below `roots`, named by its path relative to its root; with several roots,
    relative to their common parent folder (`w1/dappm`, `seg/frozen` for roots `w1` and `seg`)."""
    for root in roots:
        if not root.is_dir():
            raise FileNotFoundError(f"{root} is not a folder")
    common = Path(os.path.commonpath([root.resolve().parent for root in roots])) if len(roots) > 1 else None
    rows = []
    for root in roots:
        for run_dir in find_run_dirs(root):
            if common is not None:
                name = run_dir.resolve().relative_to(common).as_posix()
            elif run_dir == root:
                name = root.resolve().name
            else:
                name = run_dir.relative_to(root).as_posix()
            rows.append(read_run_scores(run_dir, name))
    return rows


# ---------------------------------------------------------------------------- ordering


def default_metric(rows: Iterable[ScoreRow]) -> str:
    """mIoU when any run has it, else kNN top-1 of the pretrained backbone."""
    return "mIoU" if any("mIoU" in row.values for row in rows) else "knn_top1"


def sort_rows(rows: Iterable[ScoreRow], metric: str) -> list[ScoreRow]:
    """Best first by `metric` (descending, ascending when lower is better); rows without it last; ties by name."""
    sign = 1.0 if COLUMN_BY_KEY[check_metric(metric)].lower_is_better else -1.0
    return sorted(rows, key=lambda row: (metric not in row.values, sign * row.values.get(metric, 0.0), row.name))


def visible_columns(rows: Sequence[ScoreRow], metric: str, required: Sequence[str] = ()) -> list[Column]:
    """Columns with a value in some row, plus `metric` and the `required` ones, in `COLUMNS` order."""
    keep = {metric, *required} | {key for row in rows for key in row.values}
    return [column for column in COLUMNS if column.key in keep]


# --------------------------------------------------------------------------- rendering


def format_value(value: float | None, kind: str) -> str:
    """Human-readable cell: scores with 2 decimals, counts in millions (thousands below 0.01 M), seconds as
    `m min s s`."""
    if value is None:
        return ""
    if kind == "count":
        return f"{value / 1e6:.2f} M" if value >= 10_000 else f"{value / 1e3:.1f} k"
    if kind == "milliseconds":  # a value in seconds
        return f"{value * 1000:.0f} ms"
    if kind == "megabytes":
        return f"{value:.0f} MB"
    if kind == "seconds":
        minutes, seconds = divmod(round(value), 60)
        return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"
    return f"{value:.2f}"


@dataclass(frozen=True)
class ScoreTable:
    """Sorted rows and the columns to show; renders as Markdown, CSV and a rich table."""

    rows: list[ScoreRow]
    columns: list[Column]
    metric: str
    first: str = "run"
    title: str = "Scores"

    def cells(self) -> list[list[str]]:
        return [[row.name, *(format_value(row.values.get(c.key), c.kind) for c in self.columns)] for row in self.rows]

    def curve_epochs(self) -> list[int]:
        """Every epoch of the runs' mIoU curves when some run has seg scores at several epochs, else none."""
        if not any(len(row.seg_curve) > 1 for row in self.rows):
            return []
        return sorted({epoch for row in self.rows for epoch, _ in row.seg_curve})

    def markdown(self, out_dir: Path | None = None) -> str:
        """The table (and the mIoU curves); with `out_dir`, where scores.md goes, each run's last
        reconstruction figure linked relative to it."""
        titles = [self.first, *(f"**{c.title}**" if c.key == self.metric else c.title for c in self.columns)]
        lines = [
            f"# {self.title}",
            "",
            f"Sorted by {COLUMN_BY_KEY[self.metric].title} "
            f"({'ascending' if COLUMN_BY_KEY[self.metric].lower_is_better else 'descending'}).",
            "",
            "| " + " | ".join(titles) + " |",
            "|" + "|".join(["---", *("---:" for _ in self.columns)]) + "|",
            *("| " + " | ".join(cells) + " |" for cells in self.cells()),
        ]
        epochs = self.curve_epochs()
        if epochs:
            lines += ["", *self._curve_markdown(epochs)]
        figures = [(row.name, row.reconstructions) for row in self.rows if row.reconstructions is not None]
        if figures and out_dir is not None:
            lines += ["", "## Reconstructions", "", "Masked input / reconstruction / target of the last evaluation.", ""]
            lines += [f"### {name}\n\n![{name}]({Path(os.path.relpath(path, out_dir)).as_posix()})\n"
                      for name, path in figures]  # fmt: skip
        heatmaps = [(row.name, row.domains_plot) for row in self.rows if row.domains_plot is not None]
        if heatmaps and out_dir is not None:
            lines += ["", "## mIoU per domain after each domain step", ""]
            lines += [f"### {name}\n\n![{name}]({Path(os.path.relpath(path, out_dir)).as_posix()})\n"
                      for name, path in heatmaps]  # fmt: skip
        return "\n".join(lines) + "\n"

    def _curve_markdown(self, epochs: list[int]) -> list[str]:
        """Every run's mIoU at every epoch (rows in the order of the score table), and the plot `write` draws."""
        lines = [
            "## mIoU during pretraining",
            "",
            "mIoU after each number of pretraining epochs (0 = random init).",
            "",
            "| " + " | ".join([self.first, *map(str, epochs)]) + " |",
            "|" + "|".join(["---", *("---:" for _ in epochs)]) + "|",
        ]
        for row in self.rows:
            cells = [row.name, *(format_value(value, "score") for value in _at(row.seg_curve, epochs))]
            lines.append("| " + " | ".join(cells) + " |")
        return [*lines, "", f"![mIoU vs epoch](plots/{MIOU_PLOT})"]

    def csv(self) -> str:
        """Machine-readable: column keys as header (then `mIoU@<epoch>` of the curves), raw numbers (blank when
        missing)."""
        epochs = self.curve_epochs()
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([self.first, *(c.key for c in self.columns), *(f"mIoU@{epoch}" for epoch in epochs)])
        for row in self.rows:
            writer.writerow([row.name, *(_raw(row.values.get(c.key)) for c in self.columns),
                             *(_raw(value) for value in _at(row.seg_curve, epochs))])  # fmt: skip
        return buffer.getvalue()

    def rich(self) -> Table:
        table = Table(title=f"{self.title} (sorted by {COLUMN_BY_KEY[self.metric].title})")
        table.add_column(self.first)
        for column in self.columns:
            table.add_column(column.title, justify="right", style="bold" if column.key == self.metric else None)
        for cells in self.cells():
            table.add_row(*cells)
        return table

    def write(self, out_dir: Path) -> tuple[Path, Path]:
        """`out_dir/scores.md` and `out_dir/scores.csv` (and, with mIoU curves, `out_dir/plots/miou_vs_epoch.png`)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        md_path, csv_path = out_dir / "scores.md", out_dir / "scores.csv"
        write_text(md_path, self.markdown(out_dir))
        write_text(csv_path, self.csv())
        if self.curve_epochs():
            curves = {row.name: row.seg_curve for row in self.rows if row.seg_curve}
            plot_miou_vs_epoch(curves, out_dir / "plots" / MIOU_PLOT)
        return md_path, csv_path


def build_score_table(
    rows: Iterable[ScoreRow],
    metric: str | None = None,
    *,
    required: Sequence[str] = (),
    first: str = "run",
    title: str = "Scores",
) -> ScoreTable:
    """Sort by `metric` (default: `default_metric`) and keep the columns that have values."""
    rows = list(rows)
    metric = check_metric(metric) if metric is not None else default_metric(rows)
    ordered = sort_rows(rows, metric)
    return ScoreTable(ordered, visible_columns(ordered, metric, required), metric, first, title)


def _raw(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else f"{value:.4f}"


def _at(curve: Curve, epochs: list[int]) -> list[float | None]:
    """The curve's values at `epochs` (None where it has none)."""
    by_epoch = dict(curve)
    return [by_epoch.get(epoch) for epoch in epochs]

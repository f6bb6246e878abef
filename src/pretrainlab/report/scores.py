"""Score tables over run directories: one row per run, sorted by a metric, as Markdown, CSV
and a rich table. One implementation for `pretrainlab sweep` (a row per variant) and
`pretrainlab report DIR...` (every run below the folders).

A run is any folder holding `summary.json` and/or `eval/*.json`; it is read through
`run_dir.RunDir`. Values come from

    summary.json               knn_top1, linear_top1: {pretrained, random_init}, num_params, wall_time_s
    eval/knn.json              {pretrained | random_init: {top1}}    (evaluations by hand)
    eval/linear.json           {pretrained | random_init: {top1}}
    <phase folder>/result.json knn_top1, linear_top1 of the finished phases (a study without summary.json)
    seg.json                   {summary: {mIoU, mAcc, aAcc}} of the last `seg` phase, else of eval/
    seg_random_init.json       the same, for the random-init backbone of a study

Scores are percentages as the evaluators write them. Higher is better for every metric,
so tables sort descending; runs without the metric come last.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rich.table import Table

from pretrainlab.registry import did_you_mean
from pretrainlab.run_dir import RunDir, read_json


@dataclass(frozen=True)
class Column:
    """A value of a score table: `key` in CSV and `--metric`, `title` in Markdown and the terminal."""

    key: str
    title: str
    kind: Literal["score", "count", "seconds"] = "score"


COLUMNS: tuple[Column, ...] = (
    Column("knn_top1", "kNN top-1"),
    Column("knn_top1_random_init", "kNN top-1 random init"),
    Column("linear_top1", "linear top-1"),
    Column("linear_top1_random_init", "linear top-1 random init"),
    Column("mIoU", "mIoU"),
    Column("mAcc", "mAcc"),
    Column("mIoU_random_init", "mIoU random init"),
    Column("aAcc", "aAcc"),
    Column("num_params", "params", "count"),
    Column("wall_time_s", "wall time", "seconds"),
)
COLUMN_BY_KEY = {column.key: column for column in COLUMNS}
SKIPPED_FOLDERS = frozenset({"pretrain", "checkpoints", "logs", "plots", "eval", "analysis"})


@dataclass(frozen=True)
class ScoreRow:
    """One run: its display name, folder and the values found (keys of `COLUMNS`)."""

    name: str
    run_dir: Path
    values: dict[str, float]


def check_metric(metric: str) -> str:
    """Return `metric` if it is a column key, else raise a ValueError with the known keys."""
    if metric not in COLUMN_BY_KEY:
        known = list(COLUMN_BY_KEY)
        raise ValueError(f"unknown metric '{metric}'{did_you_mean(metric, known)} known: {', '.join(known)}")
    return metric


# ----------------------------------------------------------------------------- reading


def _pair(values: dict[str, float], key: str, scores: Any, field: str | None = None) -> None:
    """`{pretrained: x, random_init: y}` (x, y numbers, or mappings holding `field`) -> key, key_random_init."""
    if not isinstance(scores, dict):
        return
    for name, suffix in (("pretrained", ""), ("random_init", "_random_init")):
        value = scores.get(name)
        if field is not None and isinstance(value, dict):
            value = value.get(field)
        if isinstance(value, (int, float)):
            values[key + suffix] = float(value)


def read_run_scores(run_dir: Path, name: str | None = None) -> ScoreRow:
    """Every known value of one run directory (missing files and keys are simply absent)."""
    run = RunDir(run_dir)
    values: dict[str, float] = {}
    evaluations = run.read_eval()
    _pair(values, "knn_top1", evaluations.get("knn"), "top1")
    _pair(values, "linear_top1", evaluations.get("linear"), "top1")
    for phase in run.phase_results():  # an unfinished study: what its finished phases hold
        for key in ("knn_top1", "linear_top1"):
            _pair(values, key, phase.get(key))
    seg_folder = run.last_phase_dir("seg") or run.eval_dir
    for file, suffix, keys in (("seg", "", ("mIoU", "mAcc", "aAcc")), ("seg_random_init", "_random_init", ("mIoU",))):
        path = seg_folder / f"{file}.json"
        seg = read_json(path) if path.is_file() else {}
        seg = seg.get("summary", seg)
        for key in keys:
            if isinstance(seg.get(key), (int, float)):
                values[key + suffix] = float(seg[key])
    summary = run.read_summary() if run.has_summary() else {}
    for key in ("knn_top1", "linear_top1"):
        _pair(values, key, summary.get(key))
    for key in ("num_params", "wall_time_s"):
        if isinstance(summary.get(key), (int, float)):
            values[key] = float(summary[key])
    return ScoreRow(name or run_dir.name, run_dir, values)


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
    """Descending by `metric`; rows without it last; ties by name."""
    check_metric(metric)
    return sorted(rows, key=lambda row: (metric not in row.values, -row.values.get(metric, 0.0), row.name))


def visible_columns(rows: Sequence[ScoreRow], metric: str, required: Sequence[str] = ()) -> list[Column]:
    """Columns with a value in some row, plus `metric` and the `required` ones, in `COLUMNS` order."""
    keep = {metric, *required} | {key for row in rows for key in row.values}
    return [column for column in COLUMNS if column.key in keep]


# --------------------------------------------------------------------------- rendering


def format_value(value: float | None, kind: str) -> str:
    """Human-readable cell: scores with 2 decimals, counts in millions, seconds as `m min s s`."""
    if value is None:
        return ""
    if kind == "count":
        return f"{value / 1e6:.2f} M"
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

    def markdown(self) -> str:
        titles = [self.first, *(f"**{c.title}**" if c.key == self.metric else c.title for c in self.columns)]
        lines = [
            f"# {self.title}",
            "",
            f"Sorted by {COLUMN_BY_KEY[self.metric].title} (descending).",
            "",
            "| " + " | ".join(titles) + " |",
            "|" + "|".join(["---", *("---:" for _ in self.columns)]) + "|",
            *("| " + " | ".join(cells) + " |" for cells in self.cells()),
        ]
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        """Machine-readable: column keys as header, raw numbers (blank when missing)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([self.first, *(c.key for c in self.columns)])
        for row in self.rows:
            writer.writerow([row.name, *(_raw(row.values.get(c.key)) for c in self.columns)])
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
        """`out_dir/scores.md` and `out_dir/scores.csv`."""
        out_dir.mkdir(parents=True, exist_ok=True)
        md_path, csv_path = out_dir / "scores.md", out_dir / "scores.csv"
        md_path.write_text(self.markdown())
        csv_path.write_text(self.csv())
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

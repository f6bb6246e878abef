"""Run a sweep: every variant's study (finished ones are skipped, interrupted ones resume),
then the study's score table `runs/<study>/scores.md` and `scores.csv` (and, when the runs
evaluate segmentation during pretraining, `runs/<study>/plots/miou_vs_epoch.png`).

Progress across variants is printed as one rich rule per variant (elapsed, ETA); the
per-epoch bar inside each variant is Lightning's. A single live display for both is not
possible: Lightning's progress bar clears the console's live stack when it starts.
"""

from __future__ import annotations

import logging
import time

from rich.console import Console

from pretrainlab.config.loading import ConfigError
from pretrainlab.config.sweeps import Sweep
from pretrainlab.report.scores import (
    COLUMN_BY_KEY,
    ScoreRow,
    ScoreTable,
    build_score_table,
    format_value,
    read_run_scores,
)
from pretrainlab.study.run import load_run_config
from pretrainlab.study.runner import run_study

log = logging.getLogger(__name__)

SWEEP_COLUMNS = ("knn_top1", "knn_top1_random_init", "linear_top1", "num_params", "wall_time_s")
SEG_SWEEP_COLUMNS = ("mIoU", "mIoU_random_init", "num_params", "wall_time_s")  # a sweep sorted by a seg metric (W4, W5)
SEG_METRICS = frozenset({"mIoU", "mAcc", "aAcc", "mIoU_random_init"})
ONLINE_SWEEP_COLUMNS = ("mean_target_miou", "mean_final_miou", "mean_forgetting", "trainable_params", "step_time_s",
                        "wall_time_s")  # W2
ONLINE_METRICS = frozenset({"mean_target_miou", "mean_final_miou", "mean_forgetting"})


def required_columns(metric: str) -> tuple[str, ...]:
    """The columns a sweep (or search) table shows even before any run has them: those of its metric's workflow."""
    if metric in SEG_METRICS:
        return SEG_SWEEP_COLUMNS
    return ONLINE_SWEEP_COLUMNS if metric in ONLINE_METRICS else SWEEP_COLUMNS


def is_finished(sweep: Sweep, variant: str) -> bool:
    return (sweep.configs[variant].run_dir / "summary.json").is_file()


def check_existing_runs(sweep: Sweep) -> None:
    """Raise if a variant's folder holds a run of a different config (a finished one would be
    reported as if it were this variant, an unfinished one could not resume)."""
    stale = []
    for config in sweep.configs.values():
        if (config.run_dir / "config.yaml").is_file() and load_run_config(config.run_dir) != config:
            stale.append(str(config.run_dir))
    if stale:
        raise ConfigError(
            f"{sweep.path}: these runs were made with a different config (another preset or overrides?): "
            f"{', '.join(stale)}; choose another study folder (--study NAME) or remove them"
        )


def run_sweep(sweep: Sweep, console: Console | None = None) -> ScoreTable:
    """Run every unfinished variant in order, then write and return the study's score table."""
    console = console or Console(stderr=True)
    check_existing_runs(sweep)
    todo = [variant for variant in sweep.configs if not is_finished(sweep, variant)]
    log.info(
        "sweep %s: %d variants, %d finished, %d to run -> %s",
        sweep.file.study,
        len(sweep.configs),
        len(sweep.configs) - len(todo),
        len(todo),
        sweep.study_dir,
    )
    started = time.perf_counter()
    for done, variant in enumerate(todo):
        elapsed = time.perf_counter() - started
        eta = f", ETA {(elapsed / done) * (len(todo) - done) / 60:.0f} min" if done else ""
        console.rule(f"[bold]{variant}[/bold]  ({done + 1}/{len(todo)}, {elapsed / 60:.1f} min elapsed{eta})")
        run_study(sweep.configs[variant])
        log.info("%s: %s", variant, describe_score(read_run_scores(sweep.configs[variant].run_dir), sweep.file.metric))
    table = sweep_score_table(sweep)
    table.write(sweep.study_dir)
    return table


def describe_score(row: ScoreRow, metric: str) -> str:
    """`mIoU 15.40 (random init 14.90)`: the sweep's metric of one finished run, for the log."""
    value, random_init = row.values.get(metric), row.values.get(f"{metric}_random_init")
    text = f"{COLUMN_BY_KEY[metric].title} {format_value(value, 'score') or 'missing'}"
    return text + (f" (random init {random_init:.2f})" if random_init is not None else "")


def sweep_score_table(sweep: Sweep) -> ScoreTable:
    """One row per variant (finished or not), sorted by the sweep's metric; the columns of its kind of metric
    are shown even before any run has them."""
    rows = [read_run_scores(config.run_dir, variant) for variant, config in sweep.configs.items()]
    required = required_columns(sweep.file.metric)
    if not any(config.eval.random_init_baseline for config in sweep.configs.values()):
        required = tuple(key for key in required if not key.endswith("_random_init"))  # no run scores it (W5)
    return build_score_table(rows, sweep.file.metric, required=required, first="variant",
                             title=f"Sweep `{sweep.file.study}`")  # fmt: skip

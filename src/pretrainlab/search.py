"""`pretrainlab search`: Optuna samples the `search:` section of a sweep file; every trial is an ordinary run.

    runs/<study>/search.db                 the Optuna study (SQLite): a search resumes where it stopped
                 trial_<NNN>/              a trial's run (config.yaml, summary.json, ...) and trial.json (its params)
                 scores.md, scores.csv     one row per trial run (report/scores.py); scores.md then lists every
                                           trial's state, parameters and objectives, and links the plots
                 plots/search_history_<metric>.png     Optuna's optimisation history, per objective
                 plots/search_importance_<metric>.png  fANOVA parameter importances (>= 2 complete trials, >= 2 params)
                 plots/search_pareto.png               the Pareto front of two objectives

A trial's config is base -> sweep overrides -> preset -> the sampled values -> command-line overrides
(`Sweep.trial_config`), named after its run folder `trial_<NNN>` (NNN: the number of the trial that started
it). It runs with `run_study`; its objectives are read from the run folder like a score table's columns.

Resuming: `--trials N` counts COMPLETE trials; a later call with the same N runs nothing, a larger one the
difference. On start, a trial still RUNNING (its process was killed) is marked FAIL, and every FAIL trial that
has not been retried yet (it raised, or was stopped with Ctrl-C) is enqueued again with its parameters and its
run folder (Optuna's retry, system attr `failed_trial`), so its run resumes from its last checkpoint. A trial
whose sampled config does not validate fails for good. One search process per study folder (it holds the
folder's lock, run_lock.py): a RUNNING trial found on start is a dead one.

Reproducibility: before each trial the sampler is rebuilt, seeded with the config's `seed` + the trial's
number, so what a trial samples depends only on the seed, its number and the trials before it (the grid's
order is shuffled by the seed alone). TPE samples its first 10 trials at random (Optuna's default); NSGA-II
its first generation (`population_size`).
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console

from pretrainlab.config.loading import ConfigError
from pretrainlab.config.schema import Config
from pretrainlab.config.search_space import (
    SAMPLERS,
    Direction,
    SearchParam,
    SearchSection,
)
from pretrainlab.config.sweeps import Sweep
from pretrainlab.registry import did_you_mean
from pretrainlab.report.scores import (
    COLUMN_BY_KEY,
    ScoreRow,
    ScoreTable,
    build_score_table,
    format_value,
    read_run_scores,
)
from pretrainlab.run_dir import write_json
from pretrainlab.run_lock import hold_run_lock
from pretrainlab.study.run import load_run_config
from pretrainlab.study.runner import run_study
from pretrainlab.sweep import required_columns

log = logging.getLogger(__name__)

STORAGE = "search.db"
TRIAL_FILE = "trial.json"
REFERENCE = "trial"  # name of the config without sampled values: the study's fingerprint, the sampler's seed
Objectives = list[tuple[str, Direction]]

# (search section, config seed, trial number, sweep file for errors) -> the sampler for that trial
_SAMPLERS: dict[str, Callable[[SearchSection, int, int, str], optuna.samplers.BaseSampler]] = {
    "tpe": lambda search, seed, number, source: optuna.samplers.TPESampler(seed=seed + number),
    "nsga2": lambda search, seed, number, source: optuna.samplers.NSGAIISampler(
        population_size=search.population_size, seed=seed + number
    ),
    "random": lambda search, seed, number, source: optuna.samplers.RandomSampler(seed=seed + number),
    # the seed shuffles the grid, whose points trials refer to by index: the same for every trial
    "grid": lambda search, seed, number, source: optuna.samplers.GridSampler(search.grid(source), seed=seed),
}
assert set(_SAMPLERS) == set(SAMPLERS), "config/search_space.py's SAMPLERS and the builders here differ"


def make_sampler(
    name: str, search: SearchSection, seed: int, trial_number: int, source: str
) -> optuna.samplers.BaseSampler:
    """The sampler `name` over `search` for trial `trial_number`, seeded from `seed`; errors name `source`."""
    if name not in _SAMPLERS:
        raise ConfigError(f"unknown sampler '{name}'{did_you_mean(name, list(SAMPLERS))} known: {', '.join(SAMPLERS)}")
    return _SAMPLERS[name](search, seed, trial_number, source)


def search_section(sweep: Sweep) -> SearchSection:
    if sweep.file.search is None:
        raise ConfigError(f"{sweep.path} has no `search:` section (`pretrainlab sweep` runs its variants)")
    return sweep.file.search


def run_search(
    sweep: Sweep, *, sampler: str = "tpe", num_trials: int | None = None, console: Console | None = None
) -> ScoreTable:
    """Run trials until `num_trials` are complete (grid: by default every combination), then write the study's
    score table and plots; returns the table.

    Raises:
        ConfigError: no search section, no `num_trials` for a sampler that needs it, a study or run folder
            made with another config, a trial without the objective's score; whatever a trial raised.
        RunLockedError: another search is running in the study folder, or another process is writing a
            trial's run folder.
    """
    search = search_section(sweep)
    objectives = search.resolved_objectives(sweep.file.metric)
    make_sampler(sampler, search, 0, 0, str(sweep.path))  # a bad name or grid fails before anything is written
    num_trials = _target_trials(sweep, search, sampler, num_trials)
    reference = sweep.trial_config(REFERENCE, {})
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # each trial is logged below, with its run folder
    with hold_run_lock(sweep.study_dir):  # one search per study folder: retry_unfinished relies on it
        study = open_study(sweep, objectives, reference)
        retry_unfinished(study)
        objective = trial_objective(sweep, search, objectives, sampler)
        _run_trials(sweep, study, sampler, num_trials, objective, reference.seed, console or Console(stderr=True))
        return write_results(sweep, study, objectives, sampler, reference.seed)


def _target_trials(sweep: Sweep, search: SearchSection, sampler: str, num_trials: int | None) -> int:
    if num_trials is not None and num_trials < 1:
        raise ConfigError(f"--trials must be at least 1 (got {num_trials})")
    if sampler != "grid":
        if num_trials is None:
            raise ConfigError(f"the {sampler} sampler needs --trials N (the number of complete trials to reach)")
        return num_trials
    size = search.grid_size(str(sweep.path))
    if num_trials is not None and num_trials > size:
        log.info("the grid has %d combinations: running those, not %d trials", size, num_trials)
    return size if num_trials is None else min(num_trials, size)


def open_study(sweep: Sweep, objectives: Objectives, reference: Config) -> optuna.Study:
    """Create or load `study_dir/search.db`; refuse one started with another config or search space."""
    sweep.study_dir.mkdir(parents=True, exist_ok=True)
    path = sweep.study_dir / STORAGE
    study = optuna.create_study(
        storage=f"sqlite:///{path.resolve()}",
        study_name=sweep.file.study,
        directions=[direction for _, direction in objectives],
        load_if_exists=True,
        sampler=optuna.samplers.RandomSampler(),  # replaced, seeded, before every trial
    )
    assert sweep.file.search is not None
    fingerprint = json.loads(json.dumps({
        "config": reference.model_dump(mode="json"),
        "search": sweep.file.search.model_dump(mode="json"),
        "objectives": objectives,
    }))  # fmt: skip
    stored = study.user_attrs.get("fingerprint")
    if stored is None:
        study.set_user_attr("fingerprint", fingerprint)
    elif stored != fingerprint:
        changed = ", ".join(_differences(stored, fingerprint)[:6])
        raise ConfigError(
            f"{path}: this search was started with another config or search space (changed: {changed}); "
            f"choose another study folder (--study NAME) or remove it"
        )
    return study


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two JSON-like trees."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(old.keys() | new.keys())
        return [key for name in keys for key in _differences(old.get(name), new.get(name), f"{prefix}{name}.")]
    return [] if old == new else [prefix.rstrip(".")]


def retry_unfinished(study: optuna.Study) -> None:
    """Mark RUNNING trials (of a killed search) FAIL; enqueue every failed trial not retried yet (invalid
    configs excepted) again, with its parameters and run folder."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        log.info("trial %d (%s) was left running by an earlier search: marking it failed", trial.number, _run(trial))
        study.tell(trial.number, state=TrialState.FAIL)
    trials = study.get_trials(deepcopy=False)
    retried = {trial.system_attrs.get("failed_trial") for trial in trials}
    for trial in trials:
        if trial.state != TrialState.FAIL or trial.number in retried or "invalid" in trial.user_attrs:
            continue
        log.info("retrying trial %d (%s) with the same parameters: %s", trial.number, _run(trial),
                 format_params(trial.params))  # fmt: skip
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.WAITING,
                params=trial.params,
                distributions=trial.distributions,
                user_attrs=trial.user_attrs,
                system_attrs={**trial.system_attrs, "failed_trial": trial.number},
            )
        )


def suggest(trial: optuna.Trial, params: dict[str, SearchParam]) -> dict[str, Any]:
    """{dotted key: value} sampled (or, for a retried trial, recalled) for `trial`."""
    values: dict[str, Any] = {}
    for key, param in params.items():
        if param.choices is not None:
            values[key] = trial.suggest_categorical(key, param.choices)
        elif param.is_int:
            assert isinstance(param.low, int) and isinstance(param.high, int)
            values[key] = trial.suggest_int(key, param.low, param.high, step=int(param.step or 1), log=param.log)
        else:
            assert param.low is not None and param.high is not None
            values[key] = trial.suggest_float(key, param.low, param.high, step=param.step, log=param.log)
    return values


def trial_objective(
    sweep: Sweep, search: SearchSection, objectives: Objectives, sampler: str
) -> Callable[[optuna.Trial], list[float]]:
    """The function Optuna calls per trial: sample, build and check the config, run the study, read the scores."""
    metrics = [metric for metric, _ in objectives]

    def objective(trial: optuna.Trial) -> list[float]:
        run_name = trial.user_attrs.get("run", f"trial_{trial.number:03d}")  # a retry keeps its run folder
        trial.set_user_attr("run", run_name)
        trial.set_user_attr("sampler", sampler)
        values = suggest(trial, search.params)
        try:
            config = sweep.trial_config(run_name, values)
        except ConfigError as error:
            log.warning("%s: the sampled config is invalid; the trial fails (not retried)\n%s", run_name, error)
            trial.set_user_attr("invalid", str(error))
            return [math.nan] * len(metrics)
        check_run_folder(config)
        record = {"trial": trial.number, "run": run_name, "sampler": sampler, "params": values}
        write_json(config.run_dir / TRIAL_FILE, record)
        run_study(config)
        row = read_run_scores(config.run_dir, run_name)
        missing = [metric for metric in metrics if not math.isfinite(row.values.get(metric, math.nan))]
        if missing:
            raise ConfigError(
                f"{config.run_dir}: no {', '.join(missing)} in its scores; does the config's study.phases evaluate it?"
            )
        scores = [row.values[metric] for metric in metrics]
        write_json(config.run_dir / TRIAL_FILE, {**record, "values": dict(zip(metrics, scores))})
        log.info("%s: %s  (%s)", run_name, describe_objectives(row, metrics), format_params(values))
        return scores

    return objective


def check_run_folder(config: Config) -> None:
    """Refuse a trial folder holding a run of another config (a finished one would be scored as this trial)."""
    if (config.run_dir / "config.yaml").is_file() and load_run_config(config.run_dir) != config:
        raise ConfigError(
            f"{config.run_dir} holds a run of another config (left by an earlier search?); "
            f"choose another study folder (--study NAME) or remove it"
        )


def _run_trials(
    sweep: Sweep,
    study: optuna.Study,
    sampler: str,
    num_trials: int,
    objective: Callable[[optuna.Trial], list[float]],
    seed: int,
    console: Console,
) -> None:
    """One `optimize` call per trial, each with a sampler seeded by the trial's number, until `num_trials` are
    complete (or the grid is exhausted); stops after `num_trials` failed (invalid) trials in a row."""
    complete_before = _num_complete(study)
    log.info("search %s: %d of %d trials complete, %s sampler -> %s",
             sweep.file.study, complete_before, num_trials, sampler, sweep.study_dir)  # fmt: skip
    started, failures = time.perf_counter(), 0
    while (complete := _num_complete(study)) < num_trials:
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))  # retries run first
        number = waiting[0].number if waiting else len(study.get_trials(deepcopy=False))
        study.sampler = make_sampler(sampler, search_section(sweep), seed, number, str(sweep.path))
        is_grid = isinstance(study.sampler, optuna.samplers.GridSampler)
        if is_grid and not waiting and study.sampler.is_exhausted(study):
            log.info("the grid is exhausted (failed combinations are not repeated)")
            break
        elapsed, done = time.perf_counter() - started, complete - complete_before
        eta = f", ETA {elapsed / done * (num_trials - complete) / 60:.0f} min" if done else ""
        console.rule(f"[bold]trial {number}[/bold]  ({complete + 1}/{num_trials}, {elapsed / 60:.1f} min elapsed{eta})")
        study.optimize(objective, n_trials=1)  # re-raises what the trial raised (the trial is marked FAIL)
        failures = 0 if _num_complete(study) > complete else failures + 1
        if failures >= num_trials:
            raise ConfigError(f"{sweep.path}: {failures} trials in a row sampled invalid configs; narrow the search")


def _num_complete(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def _run(trial: FrozenTrial) -> str:
    return str(trial.user_attrs.get("run", "no run folder"))


# ----------------------------------------------------------------------------------- results


def write_results(sweep: Sweep, study: optuna.Study, objectives: Objectives, sampler: str, seed: int) -> ScoreTable:
    """`scores.md` / `scores.csv` with a row per trial run, the trials section and the plots; returns the table."""
    trials = study.get_trials(deepcopy=False)
    runs = list(dict.fromkeys(str(trial.user_attrs["run"]) for trial in trials if "run" in trial.user_attrs))
    rows = [read_run_scores(sweep.study_dir / run, run) for run in runs if (sweep.study_dir / run).is_dir()]
    metric = sweep.file.metric
    required = required_columns(metric)
    table = build_score_table(rows, metric, required=required, first="trial", title=f"Search `{sweep.file.study}`")
    md_path, _ = table.write(sweep.study_dir)
    params = list(search_section(sweep).params)
    plots = write_plots(study, objectives, params, sweep.study_dir / "plots", seed)
    section = trials_markdown(study, objectives, params, sampler, seed)
    figures = [f"![{caption}]({path.relative_to(sweep.study_dir).as_posix()})" for caption, path in plots]
    with md_path.open("a") as file:
        file.write("\n" + "\n\n".join([section, *figures]) + "\n")
    return table


def trials_markdown(study: optuna.Study, objectives: Objectives, params: list[str], sampler: str, seed: int) -> str:
    """Every trial: its state, parameters and objective values; and the best trial (the Pareto front)."""
    trials = study.get_trials(deepcopy=False)
    retries = {trial.system_attrs["failed_trial"]: trial.number for trial in trials
               if "failed_trial" in trial.system_attrs}  # fmt: skip
    complete = [trial for trial in trials if trial.state == TrialState.COMPLETE]
    described = ", ".join(f"{COLUMN_BY_KEY[metric].title} ({direction})" for metric, direction in objectives)
    summary = (
        f"Optuna study `{STORAGE}`: {len(complete)} complete trials of {len(trials)}; this call's sampler: "
        f"{sampler} (seed {seed} + trial number); objectives: {described}."
    )
    lines = ["## Trials", "", summary, ""]
    if complete:
        best = study.best_trials if len(objectives) > 1 else [study.best_trial]
        label = "Pareto front" if len(objectives) > 1 else "Best trial"
        lines += [f"{label}: " + "; ".join(f"{_run(trial)} ({format_params(trial.params)})" for trial in best), ""]
    titles = ["trial", "run", "state", *params, *(COLUMN_BY_KEY[metric].title for metric, _ in objectives)]
    aligns = ["---:", "---", "---", *["---:"] * (len(titles) - 3)]
    lines += ["| " + " | ".join(titles) + " |", "|" + "|".join(aligns) + "|"]
    for trial in trials:
        state = trial.state.name.lower()
        if trial.number in retries:
            state += f" (retried as {retries[trial.number]})"
        elif "invalid" in trial.user_attrs:
            state += " (invalid config)"
        values = [_format_param(trial.params[key]) if key in trial.params else "" for key in params]
        scores = [format_value(value, COLUMN_BY_KEY[metric].kind) for value, (metric, _) in
                  zip(trial.values or [None] * len(objectives), objectives)]  # fmt: skip
        lines.append("| " + " | ".join([str(trial.number), _run(trial), state, *values, *scores]) + " |")
    return "\n".join(lines)


def write_plots(
    study: optuna.Study, objectives: Objectives, params: list[str], plots_dir: Path, seed: int
) -> list[tuple[str, Path]]:
    """Optuna's optimisation history and parameter importances per objective, and the Pareto front of two
    objectives, as PNG in `plots_dir`; returns (caption, path) of each written."""
    from optuna.visualization import matplotlib as optuna_plots

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        log.info("no complete trial yet: no search plots")
        return []
    is_multi = len(objectives) > 1
    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for index, (metric, _) in enumerate(objectives):
            title = COLUMN_BY_KEY[metric].title
            target: Callable[[FrozenTrial], float] | None = (lambda t, i=index: t.values[i]) if is_multi else None
            axes = optuna_plots.plot_optimization_history(study, target=target, target_name=title)
            written.append((f"optimisation history: {title}", _save(axes, plots_dir / f"search_history_{metric}.png")))
            problem = _importance_problem(complete, params, index)
            if problem:
                log.info("no parameter importance plot for %s: %s", title, problem)
                continue
            evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
            axes = optuna_plots.plot_param_importances(study, evaluator=evaluator, target=target, target_name=title)
            path = _save(axes, plots_dir / f"search_importance_{metric}.png")
            written.append((f"parameter importance: {title}", path))
        if is_multi:
            names = [COLUMN_BY_KEY[metric].title for metric, _ in objectives]
            axes = optuna_plots.plot_pareto_front(study, target_names=names)
            written.append(("Pareto front", _save(axes, plots_dir / "search_pareto.png")))
    return written


def _importance_problem(complete: list[FrozenTrial], params: list[str], index: int) -> str | None:
    """Why fANOVA importances cannot be computed for objective `index` (None when they can)."""
    if len(complete) < 2 or len(params) < 2:
        return f"needs >= 2 complete trials and >= 2 parameters (have {len(complete)} and {len(params)})"
    if len({trial.values[index] for trial in complete}) < 2:
        return "every complete trial has the same value"
    if all(len({repr(trial.params.get(key)) for trial in complete}) < 2 for key in params):
        return "every complete trial has the same parameters"
    return None


def _save(axes: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = axes.figure
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path


def describe_objectives(row: ScoreRow, metrics: list[str]) -> str:
    """`kNN top-1 61.20, params 0.01 M`: a trial's objective values, for the log."""
    columns = [COLUMN_BY_KEY[metric] for metric in metrics]
    return ", ".join(f"{column.title} {format_value(row.values.get(column.key), column.kind)}" for column in columns)


def format_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{key}={_format_param(value)}" for key, value in params.items())


def _format_param(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def describe_search(sweep: Sweep, sampler: str) -> list[str]:
    """What `--dry-run` prints: the study folder, each searched key and the objectives."""
    search = search_section(sweep)
    lines = [f"search {sweep.file.study} -> {sweep.study_dir / STORAGE}, trials in {sweep.study_dir}/trial_<NNN>"]
    for key, param in search.params.items():
        if param.choices is not None:
            lines.append(f"  {key}: one of {param.choices}")
        else:
            kind = "int" if param.is_int else "float"
            spacing = ", log" if param.log else f", step {param.step}" if param.step is not None else ""
            lines.append(f"  {key}: {kind} in [{param.low}, {param.high}]{spacing}")
    objectives = search.resolved_objectives(sweep.file.metric)
    lines.append("objectives: " + ", ".join(f"{metric} ({direction})" for metric, direction in objectives))
    if sampler == "grid":
        lines.append(f"grid: {search.grid_size(str(sweep.path))} combinations")
    return lines

"""`pretrainlab search`: the search space is checked against the config schema, the Optuna study in
runs/<study>/search.db resumes (interrupted trials retried in their run folder), every trial is a run with
a row in scores.md, the grid tries each combination once, the sampler is seeded from the config."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from conftest import tiny_run_overrides

from pretrainlab import search as search_module
from pretrainlab.cli import main
from pretrainlab.config import ConfigError
from pretrainlab.config.loading import dump_config
from pretrainlab.config.schema import Config
from pretrainlab.config.search_space import SearchParam, SearchSection
from pretrainlab.config.sweeps import expand_sweep
from pretrainlab.search import run_search

REPO = Path(__file__).resolve().parents[1]

SEARCH = """\
study: tiny_search
base: {base}
metric: knn_top1
search:
  params:
    method.temperature: {{low: 0.05, high: 0.5, log: true}}
    backbone.stem_width: {{choices: [4, 8]}}
  objectives: [knn_top1, num_params]
  population_size: 3
presets:
  one_epoch: {{engine.max_epochs: 1, engine.limit_train_batches: 2, engine.channels_last: false, eval.knn.ks: [5],
              eval.random_init_baseline: false}}
"""

GRID = """\
study: grid
base: {base}
search:
  params:
    method.temperature: {{choices: [0.1, 0.2]}}
    optim.lr: {{choices: [1.0e-3, 2.0e-3, 3.0e-3]}}
    data.batch_size: {{low: 8, high: 16, step: 8}}
"""


def write_sweep(folder: Path, text: str = SEARCH) -> Path:
    path = folder / "search.yaml"
    path.write_text(text.format(base=REPO / "configs" / "quickstart.yaml"))
    return path


def fake_study(calls: list[str], interrupt_at: int | None = None) -> Callable[[Config], dict]:
    """Stands in for `run_study`: records the run, writes config.yaml + summary.json with kNN top-1 =
    100 x temperature and the params from the stem width; the call number `interrupt_at` is stopped (Ctrl-C)."""

    def run(config: Config) -> dict:
        calls.append(config.name)
        config.run_dir.mkdir(parents=True, exist_ok=True)
        (config.run_dir / "config.yaml").write_text(dump_config(config))
        if len(calls) == interrupt_at:
            raise KeyboardInterrupt
        knn = {"pretrained": 100 * config.method.temperature}
        summary = {"knn_top1": knn, "num_params": 1000 * (config.backbone.stem_width or 1)}
        (config.run_dir / "summary.json").write_text(json.dumps(summary))
        return summary

    return run


def score_rows(study_dir: Path) -> list[str]:
    """The trial names of the score table in scores.md (its first table)."""
    table = (study_dir / "scores.md").read_text().split("## Trials")[0]
    return [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| trial_")]


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ("optim.lrr: {low: 1.0e-4, high: 1.0e-2}", r"search key 'optim.lrr': optim.lrr: unknown key; did you mean"),
        ("optim.lr: {low: 1.0e-2, high: 1.0e-4}", r"search.params.optim.lr: low 0.01 > high 0.0001"),
        ("optim.lr: {choices: []}", r"search.params.optim.lr: choices is empty"),
        ("optim.lr: {low: 0.0, high: 0.1}", r"search key 'optim.lr': optim.lr: Input should be greater than 0"),
        ("name: {choices: [a, b]}", r"search sets 'name', which the sweep sets"),
    ],
)
def test_search_keys_are_checked_against_the_schema(tmp_path: Path, param: str, message: str) -> None:
    escaped = param.replace("{", "{{").replace("}", "}}")
    path = write_sweep(tmp_path, f"study: bad\nbase: {{base}}\nsearch:\n  params:\n    {escaped}\n")
    with pytest.raises(ConfigError, match=rf"^{path}: .*{message}"):
        expand_sweep(path)


def test_bad_search_files_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_sweep(tmp_path, GRID.replace("optim.lr:", "optim.lrr:"))
    assert main(["search", str(path), "--sampler", "grid"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"error: {path}: search key 'optim.lrr': optim.lrr: unknown key; did you mean 'lr'?")
    path = write_sweep(tmp_path, GRID.replace("step: 8", "log: true"))
    assert main(["search", str(path), "--sampler", "grid", f"output_root={tmp_path}"]) == 2
    message = f"{path}: search key 'data.batch_size': the grid sampler needs `choices` or a `step`"
    assert message in capsys.readouterr().err
    assert main(["search", str(path), f"output_root={tmp_path}"]) == 2  # tpe needs --trials
    assert "the tpe sampler needs --trials N" in capsys.readouterr().err
    assert main(["search", str(path), "--trials", "2", "optim.lr=0.1", f"output_root={tmp_path}"]) == 2
    assert "search key 'optim.lr' is also set on the command line" in capsys.readouterr().err
    assert main(["sweep", str(path)]) == 2  # a search-only file has no variants
    assert "has no variants; run its `search:` section with `pretrainlab search`" in capsys.readouterr().err
    assert not list(tmp_path.glob("grid"))


def test_a_sweep_file_needs_variants_or_a_search(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, "study: empty\nbase: {base}\n")
    with pytest.raises(ConfigError, match="a sweep file needs `variants` \\(or a `search` section"):
        expand_sweep(path)
    sweep = expand_sweep(write_sweep(tmp_path, GRID), overrides=[f"output_root={tmp_path / 'runs'}"])
    assert sweep.configs == {} and sweep.study_dir == tmp_path / "runs" / "grid"
    trial = sweep.trial_config("trial_007", {"optim.lr": 0.5})
    assert trial.run_dir == tmp_path / "runs" / "grid" / "trial_007" and trial.optim.lr == 0.5


def test_directions_default_from_the_metric_and_ranges_step_onto_a_grid() -> None:
    params = {"optim.lr": SearchParam(low=0.1, high=0.3, step=0.1),
              "data.batch_size": SearchParam(low=8, high=30, step=8)}  # fmt: skip
    search = SearchSection(params=params, objectives=["mIoU", "wall_time_s"])
    assert search.resolved_objectives("knn_top1") == [("mIoU", "maximize"), ("wall_time_s", "minimize")]
    minimized = SearchSection(params=params, direction="minimize")
    assert minimized.resolved_objectives("knn_top1") == [("knn_top1", "minimize")]
    assert search.grid("f") == {"optim.lr": [0.1, 0.2, 0.3], "data.batch_size": [8, 16, 24]}
    assert params["data.batch_size"].is_int and not params["optim.lr"].is_int
    with pytest.raises(ValueError, match="direction lists 1 directions for 2 objective"):
        SearchSection(params=params, objectives=["mIoU", "num_params"], direction=["maximize"])


def test_grid_tries_every_combination_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sweep = expand_sweep(write_sweep(tmp_path, GRID), overrides=[f"output_root={tmp_path / 'runs'}"])
    calls: list[str] = []
    monkeypatch.setattr(search_module, "run_study", fake_study(calls))
    table = run_search(sweep, sampler="grid", num_trials=100)  # capped at the grid's 2 x 3 x 2 combinations
    study = optuna.load_study(study_name="grid", storage=f"sqlite:///{sweep.study_dir / 'search.db'}")
    sampled = sorted(tuple(trial.params.values()) for trial in study.trials)
    keys = list(study.trials[0].params)
    grid = {"method.temperature": [0.1, 0.2], "optim.lr": [1e-3, 2e-3, 3e-3], "data.batch_size": [8, 16]}
    assert sampled == sorted(itertools.product(*(grid[key] for key in keys)))
    assert len(calls) == 12 and len(table.rows) == 12
    assert run_search(sweep, sampler="grid") and len(calls) == 12  # every combination done: nothing runs again
    trial = json.loads((sweep.study_dir / "trial_011" / "trial.json").read_text())
    assert trial["run"] == "trial_011" and set(trial["params"]) == set(grid) and "knn_top1" in trial["values"]


def test_an_interrupted_trial_is_retried_in_its_run_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sweep = expand_sweep(write_sweep(tmp_path), overrides=[f"output_root={tmp_path / 'runs'}"])
    calls: list[str] = []
    monkeypatch.setattr(search_module, "run_study", fake_study(calls, interrupt_at=3))
    with pytest.raises(KeyboardInterrupt):
        run_search(sweep, sampler="random", num_trials=4)
    table = run_search(sweep, sampler="random", num_trials=4)
    assert calls == ["trial_000", "trial_001", "trial_002", "trial_002", "trial_004"]  # the retry, then one more
    study = optuna.load_study(study_name="tiny_search", storage=f"sqlite:///{sweep.study_dir / 'search.db'}")
    states = [trial.state.name for trial in study.trials]
    assert states == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    failed, retry = study.trials[2], study.trials[3]
    assert retry.params == failed.params and retry.user_attrs["run"] == "trial_002"
    assert sorted(score_rows(sweep.study_dir)) == ["trial_000", "trial_001", "trial_002", "trial_004"]
    assert [row.name for row in table.rows] == score_rows(sweep.study_dir)  # sorted by kNN top-1
    assert "| 2 | trial_002 | fail (retried as 3) |" in (sweep.study_dir / "scores.md").read_text()


def test_a_search_resumed_with_another_config_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_sweep(tmp_path)
    output = f"output_root={tmp_path / 'runs'}"
    monkeypatch.setattr(search_module, "run_study", fake_study([]))
    run_search(expand_sweep(path, overrides=[output]), sampler="tpe", num_trials=1)
    with pytest.raises(ConfigError, match=r"search.db: this search was started with another config .*max_epochs"):
        run_search(expand_sweep(path, preset="one_epoch", overrides=[output]), sampler="tpe", num_trials=2)


def test_the_sampler_is_seeded_from_the_config_seed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_sweep(tmp_path)
    monkeypatch.setattr(search_module, "run_study", fake_study([]))

    def sampled(study: str, *overrides: str) -> list[dict]:
        sweep = expand_sweep(path, study=study, overrides=[f"output_root={tmp_path / 'runs'}", *overrides])
        run_search(sweep, sampler="nsga2", num_trials=5)
        db = f"sqlite:///{sweep.study_dir / 'search.db'}"
        return [trial.params for trial in optuna.load_study(study_name=study, storage=db).trials]

    first = sampled("a")
    assert sampled("b") == first
    assert sampled("c", "seed=1") != first


@pytest.mark.slow
def test_a_tiny_nsga2_search_runs_resumes_and_scores_its_trials(tiny_synthetic: Path, tmp_path: Path) -> None:
    path = write_sweep(tmp_path)
    overrides = tiny_run_overrides(tiny_synthetic, tmp_path / "runs")
    overrides = [o for o in overrides if not o.startswith(("engine.max_epochs", "eval.knn.ks"))]  # the preset's
    command = ["-q", "search", str(path), "--sampler", "nsga2", "--preset", "one_epoch", *overrides]
    study_dir = tmp_path / "runs" / "tiny_search"
    assert main([*command, "--trials", "3"]) == 0
    assert len(list(study_dir.glob("trial_*/summary.json"))) == 3

    storage = f"sqlite:///{study_dir / 'search.db'}"
    killed = optuna.load_study(study_name="tiny_search", storage=storage).ask()  # a search killed mid-trial
    killed.suggest_float("method.temperature", 0.05, 0.5, log=True)
    killed.suggest_categorical("backbone.stem_width", [4, 8])
    killed.set_user_attr("run", "trial_003")

    assert main([*command, "--trials", "6"]) == 0
    study = optuna.load_study(study_name="tiny_search", storage=storage)
    assert [trial.state.name for trial in study.trials].count("COMPLETE") == 6
    assert study.trials[3].state.name == "FAIL" and study.trials[4].params == killed.params
    runs = sorted(p.parent.name for p in study_dir.glob("trial_*/summary.json"))
    assert runs == ["trial_000", "trial_001", "trial_002", "trial_003", "trial_005", "trial_006"]
    assert sorted(score_rows(study_dir)) == runs
    params = json.loads((study_dir / "trial_005" / "trial.json").read_text())["params"]
    assert params == study.trials[5].params
    plots = {p.name for p in (study_dir / "plots").glob("*.png")}
    assert {"search_history_knn_top1.png", "search_history_num_params.png", "search_pareto.png"} <= plots
    assert "(plots/search_pareto.png)" in (study_dir / "scores.md").read_text()
    assert main([*command, "--trials", "6"]) == 0  # complete: nothing runs, nothing changes
    assert len(optuna.load_study(study_name="tiny_search", storage=storage).trials) == 7

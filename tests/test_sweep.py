"""`pretrainlab sweep`: finished variants are skipped, the score table has a row per variant,
runs of another config in a variant's folder are refused."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import TINY_SYNTHETIC, _yaml_inline, tiny_run_overrides

from pretrainlab import sweep as sweep_module
from pretrainlab.cli import main
from pretrainlab.config import ConfigError
from pretrainlab.config.loading import dump_config
from pretrainlab.config.schema import Config
from pretrainlab.config.sweeps import expand_sweep
from pretrainlab.sweep import run_sweep

REPO = Path(__file__).resolve().parents[1]

SWEEP = """\
study: tiny
base: {base}
variants:
  cold: {{method.temperature: 0.5, study.phases: [{{name: pretrain}}, {{name: knn}}]}}
  warm: {{method.temperature: 0.1, study.phases: [{{name: pretrain}}, {{name: knn}}, {{name: linear}}]}}
presets:
  one_epoch: {{engine.max_epochs: 1, eval.knn.ks: [5]}}
"""


def write_sweep(folder: Path) -> Path:
    path = folder / "sweep.yaml"
    path.write_text(SWEEP.format(base=REPO / "configs" / "quickstart.yaml"))
    return path


def fake_study(calls: list[str]) -> Callable[[Config], dict]:
    """Stands in for `run_study`: records the variant and writes config.yaml + summary.json."""

    def run(config: Config) -> dict:
        calls.append(config.name)
        config.run_dir.mkdir(parents=True)
        (config.run_dir / "config.yaml").write_text(dump_config(config))
        knn = {"pretrained": 100 * config.method.temperature, "random_init": 5.0}  # cold 50, warm 10
        summary = {"knn_top1": knn, "num_params": 10}
        (config.run_dir / "summary.json").write_text(json.dumps(summary))
        return summary

    return run


def test_finished_variants_are_skipped_and_scores_are_sorted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sweep = expand_sweep(write_sweep(tmp_path), overrides=[f"output_root={tmp_path / 'runs'}"])
    calls: list[str] = []
    monkeypatch.setattr(sweep_module, "run_study", fake_study(calls))
    fake_study([])(sweep.configs["warm"])  # "warm" finished earlier
    table = run_sweep(sweep)
    assert calls == ["cold"]
    assert [(row.name, row.values["knn_top1"]) for row in table.rows] == [("cold", 50.0), ("warm", 10.0)]
    lines = (tmp_path / "runs" / "tiny" / "scores.csv").read_text().splitlines()
    assert lines[0] == "variant,knn_top1,knn_top1_random_init,linear_top1,num_params,wall_time_s"
    assert run_sweep(sweep) and calls == ["cold"]  # everything finished: nothing runs again


def test_a_run_of_another_config_in_a_variant_folder_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_sweep(tmp_path)
    output = f"output_root={tmp_path / 'runs'}"
    calls: list[str] = []
    monkeypatch.setattr(sweep_module, "run_study", fake_study(calls))
    run_sweep(expand_sweep(path, overrides=[output]))
    with pytest.raises(ConfigError, match=r"made with a different config .*--study NAME"):
        run_sweep(expand_sweep(path, preset="one_epoch", overrides=[output]))
    assert calls == ["cold", "warm"]


def test_dry_run_lists_variants_and_bad_sweeps_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_sweep(tmp_path)
    assert main(["sweep", str(path), "--dry-run", f"output_root={tmp_path}"]) == 0
    assert not (tmp_path / "tiny").exists()
    path.write_text(path.read_text().replace("method.temperature: 0.5", "method.temperature: -1"))
    assert main(["sweep", str(path), "--preset", "one_epoch"]) == 2
    assert "variant 'cold': method.temperature: Input should be greater than 0" in capsys.readouterr().err


def test_new_verbs_have_help(capsys: pytest.CaptureFixture[str]) -> None:
    for verb in (["sweep"], ["report"], ["analyze", "params"], ["evaluate", "linear"]):
        with pytest.raises(SystemExit) as exit_info:
            main([*verb, "--help"])
        assert exit_info.value.code == 0
        assert "usage: pretrainlab" in capsys.readouterr().out


def test_sweep_runs_two_tiny_variants_then_skips_them(tiny_synthetic: Path, tmp_path: Path) -> None:
    path = write_sweep(tmp_path)
    overrides = [o for o in tiny_run_overrides(tiny_synthetic, tmp_path / "runs") if not o.startswith("study.")]
    assert main(["-q", "sweep", str(path), "--preset", "one_epoch", *overrides]) == 0
    study = tmp_path / "runs" / "tiny"
    lines = (study / "scores.csv").read_text().splitlines()
    assert lines[0] == ("variant,knn_top1,knn_top1_random_init,knn_f1,knn_f1_random_init,linear_top1,"
                        "linear_top1_random_init,num_params,wall_time_s")
    header = lines[0].split(",")
    rows = {line.split(",")[0]: dict(zip(header, line.split(","))) for line in lines[1:]}
    assert set(rows) == {"cold", "warm"}
    assert rows["cold"]["linear_top1"] == "" and 0.0 <= float(rows["warm"]["linear_top1"]) <= 100.0  # where enabled
    assert all(0.0 <= float(row["knn_f1"]) <= 100.0 for row in rows.values())  # macro F1 in %
    assert all(int(row["num_params"]) > 0 for row in rows.values())
    assert json.loads((study / "warm" / "eval" / "epoch_2" / "linear" / "linear.json").read_text())["random_init"]["top1"] >= 0.0
    assert "| variant |" in (study / "scores.md").read_text()

    summaries = {name: (study / name / "summary.json").stat().st_mtime for name in rows}
    assert main(["-q", "sweep", str(path), "--preset", "one_epoch", *overrides]) == 0
    assert {name: (study / name / "summary.json").stat().st_mtime for name in rows} == summaries

    assert main(["-q", "evaluate", "linear", "--run", str(study / "cold"), "--no-random-init"]) == 0
    assert main(["-q", "report", str(study), "--metric", "linear_top1"]) == 0
    report = [line.split(",") for line in (study / "scores.csv").read_text().splitlines()]
    linear = [float(values[report[0].index("linear_top1")]) for values in report[1:]]
    assert len(linear) == 2 and linear == sorted(linear, reverse=True)  # both variants have a probe now


@pytest.mark.slow
def test_the_w1_ablations_run_end_to_end_on_tiny_data(tiny_synthetic: Path, tmp_path: Path) -> None:
    tiny = {
        "data.root": str(tiny_synthetic),
        "data.synthetic": TINY_SYNTHETIC,
        "data.batch_size": 16,
        "data.eval_batch_size": 64,
        "output_root": str(tmp_path),
        "engine.precision": "32",
        "engine.progress_bar": False,
        "engine.log_every_n_steps": 1,
        "optim.warmup_epochs": 0,
        "eval.knn.ks": [5, 10],
    }
    overrides = [f"{key}={_yaml_inline(value)}" for key, value in tiny.items()]
    assert main(["-q", "sweep", str(REPO / "configs" / "w1_sebnet" / "ablations.yaml"), *overrides]) == 0
    lines = (tmp_path / "w1_ablations" / "scores.csv").read_text().splitlines()
    header = lines[0].split(",")
    rows = {line.split(",")[0]: dict(zip(header, line.split(","))) for line in lines[1:]}
    assert set(rows) == {"no_neck", "dappm", "koleo_backbone", "dappm_koleo_backbone", "dappm_koleo_neck"}
    assert all(row["knn_top1"] and row["linear_top1"] for row in rows.values())
    assert int(rows["dappm"]["num_params"]) > int(rows["no_neck"]["num_params"])  # the neck is counted
    metrics = (tmp_path / "w1_ablations" / "dappm_koleo_neck" / "pretrain" / "metrics.jsonl").read_text()
    assert "train/loss_koleo_neck" in metrics

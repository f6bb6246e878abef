"""`pretrainlab study`: the run directory it writes, and that a finished study is not recomputed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_run_overrides

from pretrainlab.cli import main


@pytest.mark.slow
def test_study_writes_run_directory_and_is_not_recomputed(
    tiny_synthetic: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"
    overrides = tiny_run_overrides(tiny_synthetic, tmp_path, **{"eval.knn.every_n_epochs": 1})
    assert main(["-q", "study", str(config), *overrides]) == 0
    run_dir = tmp_path / "quickstart"
    for relative in (
        "config.yaml",
        "pretrain/metrics.jsonl",
        "pretrain/checkpoints/last.ckpt",
        "pretrain/00_to_epoch_2/result.json",
        "eval/epoch_2/knn/knn.json",
        "eval/epoch_2/knn/tsne.png",
        "plots/loss.png",
        "plots/knn.png",
        "report.md",
        "summary.json",
    ):
        assert (run_dir / relative).is_file(), relative
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["knn_top1"]) == {"pretrained", "random_init"}
    assert 0.0 <= summary["knn_top1"]["pretrained"] <= 100.0
    assert summary["wall_time_s"] > 0
    metrics = [json.loads(line) for line in (run_dir / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/knn_top1" in m for m in metrics)  # the periodic evaluation ran
    assert "Gain over random init" in (run_dir / "report.md").read_text()

    checkpoint_mtime = (run_dir / "pretrain" / "checkpoints" / "last.ckpt").stat().st_mtime
    summary_text = (run_dir / "summary.json").read_text()
    capsys.readouterr()
    assert main(["-q", "study", str(config), *overrides]) == 0
    assert (run_dir / "pretrain" / "checkpoints" / "last.ckpt").stat().st_mtime == checkpoint_mtime
    assert (run_dir / "summary.json").read_text() == summary_text


def test_every_verb_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for verb in (["data", "synth"], ["pretrain"], ["evaluate", "knn"], ["study"]):
        with pytest.raises(SystemExit) as exit_info:
            main([*verb, "--help"])
        assert exit_info.value.code == 0
        assert "usage: pretrainlab" in capsys.readouterr().out

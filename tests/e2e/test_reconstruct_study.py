"""A tiny MAE study with a `reconstruct` phase after each pretraining phase: the figures of the weights
of each epoch, and the report embedding the last one."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import tiny_mae_overrides

from pretrainlab.config import load_config
from pretrainlab.study.runner import run_study


@pytest.mark.slow
def test_reconstruct_phases_follow_the_pretraining(tiny_synthetic: Path, tmp_path: Path) -> None:
    config = load_config(None, tiny_mae_overrides(
        tiny_synthetic, tmp_path, name="mae_tiny", **{"method.mask_method": "segments", "study.every_epochs": 1,
                                                     "study.evaluate": [{"name": "reconstruct", "num_images": 2}]}))  # fmt: skip
    summary = run_study(config)
    run = config.run_dir
    assert [(p["phase"], p["epoch"]) for p in summary["phases"]] == [
        ("00_pretrain", 1), ("01_reconstruct", 1), ("02_pretrain", 2), ("03_reconstruct", 2)]  # fmt: skip
    assert (run / "eval" / "epoch_1" / "reconstruct" / "reconstructions.png").is_file()
    assert summary["reconstructions"] == "eval/epoch_2/reconstruct/reconstructions.png"
    assert "![reconstructions](eval/epoch_2/reconstruct/reconstructions.png)" in (run / "report.md").read_text()

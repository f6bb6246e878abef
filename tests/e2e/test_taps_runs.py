"""Through the engine: supervised pretraining (labelled views) and DINO with a neck and KoLeo at the neck."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_run_overrides

from pretrainlab.config import load_config
from pretrainlab.study.run import load_pretrained_method, pretrain
from pretrainlab.methods import DINO, Supervised

VARIANTS = {
    "supervised": {"method": {"name": "supervised", "head": {"name": "cls", "hidden_dim": 16}}},
    "dino_dappm_koleo": {
        "neck": {"name": "dappm", "branch_channels": 8},
        "method.head": {"out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16},
        "method.losses": [{"name": "koleo", "tap": "neck", "weight": 0.1}],
    },
}


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_run_logs_tap_losses_and_reloads(tiny_synthetic: Path, tmp_path: Path, variant: str) -> None:
    overrides = tiny_run_overrides(tiny_synthetic, tmp_path, name=variant, **VARIANTS[variant])
    run_dir = pretrain(load_config(None, overrides)).path
    metrics = [json.loads(line) for line in (run_dir / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    train = [m for m in metrics if "train/objective" in m]
    assert train, "no training metrics logged"
    if variant == "supervised":
        assert "train/accuracy" in train[-1]
    else:
        last = train[-1]
        assert last["train/loss_koleo_neck"] == pytest.approx(0.1 * last["train/koleo_neck"], rel=1e-3, abs=1e-6)
        assert last["train/objective"] == pytest.approx(last["train/loss"] + last["train/loss_koleo_neck"], rel=1e-3)
    assert (run_dir / "pretrain" / "checkpoints" / "last.ckpt").is_file()  # evaluations are study phases, not part of `pretrain`
    _, method, _ = load_pretrained_method(run_dir)
    assert isinstance(method, Supervised if variant == "supervised" else DINO)

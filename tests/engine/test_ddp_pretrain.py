"""DINO pretraining in 2 processes started by the CLI (Lightning DDP, gloo, CPU) against 1 process
with the doubled batch: schedules end with the run, replicas agree, weights match."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO_ROOT, TINY_SYNTHETIC

from pretrainlab.run_dir import load_checkpoint

MIN_LR = 1e-5
WEIGHT_TOLERANCE = 1e-4  # measured: 8.5e-6, float summation order of the gradient all-reduce


def tiny_dino_config(data_root: Path, output_root: Path) -> dict:
    """A BatchNorm-free DINO (ViT + head without BN), so per-process batch statistics cannot differ."""
    return {
        "output_root": str(output_root),
        "data": {"root": str(data_root), "synthetic": dict(TINY_SYNTHETIC), "batch_size": 8},
        "backbone": {"name": "timm", "arch": "vit_tiny_patch16_224", "img_size": 32, "patch_size": 8,
                     "embed_dim": 32, "depth": 2, "num_heads": 2},  # fmt: skip
        "method": {"name": "dino", "head": {"out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16, "use_bn": False},
                   "crops": {"num_local": 0}, "freeze_last_layer_epochs": 1},  # fmt: skip
        "optim": {"lr": 1e-3, "min_lr": MIN_LR, "warmup_epochs": 1},
        "engine": {"max_epochs": 3, "precision": "32", "progress_bar": False, "log_every_n_steps": 1, "num_threads": 1},
        "eval": {"knn": {"every_n_epochs": 0}},
    }


def run_cli(config: Path, *overrides: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "pretrainlab.cli", "-q", "pretrain", str(config), *overrides],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_two_process_dino_matches_one_process_with_the_doubled_batch(tiny_synthetic: Path, tmp_path: Path) -> None:
    config = tmp_path / "dino.yaml"
    config.write_text(yaml.safe_dump(tiny_dino_config(tiny_synthetic, tmp_path / "runs")))
    run_cli(config, "name=ddp", "engine.devices=2", "engine.strategy=ddp", "engine.accelerator=cpu")
    run_cli(config, "name=single", "data.batch_size=16")

    ddp, single = tmp_path / "runs" / "ddp", tmp_path / "runs" / "single"
    steps = [m for m in map(json.loads, (ddp / "pretrain" / "metrics.jsonl").read_text().splitlines()) if "train/lr" in m]
    last = steps[-1]
    per_rank_steps = TINY_SYNTHETIC["num_train"] // (8 * 2) * 3  # 6 batches per process and epoch, 3 epochs
    assert last["step"] == per_rank_steps - 1  # the last step run uses the schedules' last values
    assert last["train/lr"] == pytest.approx(MIN_LR, rel=0.1)
    assert last["train/teacher_momentum"] == pytest.approx(1.0, abs=1e-4)

    replicas = json.loads((ddp / "replicas.json").read_text())
    assert replicas["world_size"] == 2 and replicas["max_abs_difference"] == 0.0 and not replicas["differing_tensors"]

    ddp_state = load_checkpoint(ddp / "pretrain" / "checkpoints" / "last.ckpt")["state_dict"]
    single_state = load_checkpoint(single / "pretrain" / "checkpoints" / "last.ckpt")["state_dict"]
    assert ddp_state.keys() == single_state.keys()
    assert any(key.startswith("method.teacher.") for key in ddp_state) and "method.loss.center" in ddp_state
    for key, value in single_state.items():
        torch.testing.assert_close(ddp_state[key], value, rtol=0, atol=WEIGHT_TOLERANCE, msg=f"{key} differs")

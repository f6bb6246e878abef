"""A run killed mid-training resumes from its last checkpoint to the same final weights."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import KILLER, REPO_ROOT, tiny_run_overrides

from pretrainlab.config import load_config
from pretrainlab.run_dir import RunDir, load_checkpoint
from pretrainlab.study.run import pretrain

KILL_AT_STEP = 9  # 6 steps per epoch: dies in the middle of the second epoch, after one checkpoint



def method_state(run_dir: Path) -> dict[str, torch.Tensor]:
    state = load_checkpoint(RunDir(run_dir).checkpoint)
    return state["state_dict"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dino", "simclr"])
def test_killed_run_resumes_to_identical_weights(tiny_synthetic: Path, tmp_path: Path, method: str) -> None:
    extra = {"method.name": method, "engine.max_epochs": 3, "eval.random_init_baseline": False}
    if method == "dino":
        extra.update({"method.head": {"out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16}})
    overrides = tiny_run_overrides(tiny_synthetic, tmp_path / "a", **extra)
    reference_dir = pretrain(load_config(None, overrides)).path

    killed_overrides = tiny_run_overrides(tiny_synthetic, tmp_path / "b", **extra)
    killed = subprocess.run(
        [sys.executable, "-c", KILLER.format(kill_at=KILL_AT_STEP), *killed_overrides],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,  # the child is killed on purpose
        timeout=300,
    )
    assert killed.returncode == 9, killed.stderr[-2000:]
    resumed_config = load_config(None, killed_overrides)
    killed_state = load_checkpoint(RunDir(resumed_config.run_dir).checkpoint)
    # the checkpoint written at the end of the first epoch (Lightning stores its 0-based index)
    assert killed_state["epoch"] == 0 and killed_state["global_step"] == 6

    resumed_dir = pretrain(resumed_config, resume=True).path
    expected, actual = method_state(reference_dir), method_state(resumed_dir)
    assert expected.keys() == actual.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=0, msg=f"{key} differs after resume")
    steps = [line for line in (resumed_dir / "pretrain" / "metrics.jsonl").read_text().splitlines() if '"train/loss"' in line]
    assert len(steps) == len({line.split(",")[0] for line in steps})  # no duplicated history


def test_existing_run_needs_resume_flag(tiny_synthetic: Path, tmp_path: Path) -> None:
    overrides = tiny_run_overrides(tiny_synthetic, tmp_path, **{"engine.max_epochs": 1, "method.name": "simclr"})
    config = load_config(None, overrides)
    config.run_dir.mkdir(parents=True)
    (config.run_dir / "config.yaml").write_text("name: other\n")
    with pytest.raises(FileExistsError, match="--resume"):
        pretrain(config)

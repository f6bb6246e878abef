"""A study killed during its second pretraining phase and rerun gives the uninterrupted run's kNN series."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO_ROOT, tiny_run_overrides

from pretrainlab.config import load_config
from pretrainlab.study.runner import run_study

PHASES = [{"name": "pretrain", "until_epoch": 1}, {"name": "knn"}, {"name": "pretrain", "until_epoch": 2}, {"name": "knn"}]
KILL_AT_STEP = 9  # 6 steps per epoch: in the middle of the second pretraining phase

KILLER = textwrap.dedent(
    """
    import os, sys
    from pretrainlab.config import load_config
    from pretrainlab.engine import module
    from pretrainlab.study.runner import run_study

    original = module.EngineModule.training_step

    def training_step(self, batch, batch_idx):
        if self.global_step == {kill_at}:
            os._exit(9)  # like SIGKILL: no cleanup
        return original(self, batch, batch_idx)

    module.EngineModule.training_step = training_step
    run_study(load_config(None, sys.argv[1:]))
    """
)


def knn_series(run_dir: Path) -> list[dict]:
    return [json.loads((run_dir / "eval" / f"epoch_{epoch}" / "knn" / "knn.json").read_text()) for epoch in (1, 2)]


@pytest.mark.slow
def test_killed_study_resumes_to_the_same_knn_series(tiny_synthetic: Path, tmp_path: Path) -> None:
    extra = {"method.name": "simclr", "engine.max_epochs": 2, "study.phases": PHASES}
    reference = run_study(load_config(None, tiny_run_overrides(tiny_synthetic, tmp_path / "a", **extra)))

    overrides = tiny_run_overrides(tiny_synthetic, tmp_path / "b", **extra)
    killed = subprocess.run([sys.executable, "-c", KILLER.format(kill_at=KILL_AT_STEP), *overrides], cwd=REPO_ROOT,
                            capture_output=True, text=True, check=False, timeout=300)  # fmt: skip
    assert killed.returncode == 9, killed.stderr[-2000:]
    run_dir = load_config(None, overrides).run_dir
    done = sorted(path.parent.relative_to(run_dir).as_posix() for path in run_dir.rglob("result.json"))
    assert done == ["eval/epoch_1/knn", "pretrain/00_to_epoch_1"]  # killed inside phase 02

    resumed = run_study(load_config(None, overrides))
    assert knn_series(run_dir) == knn_series(next((tmp_path / "a").iterdir()))
    assert [p["knn_top1"] for p in resumed["phases"] if p["kind"] == "knn"] == [
        p["knn_top1"] for p in reference["phases"] if p["kind"] == "knn"
    ]
    assert [p["epoch"] for p in resumed["phases"]] == [1, 1, 2, 2]

"""Kill soak (issue 14): a pretraining, a sweep, W4's pretrain <-> segmentation loop and W2's online
runner, each killed with SIGKILL at random moments and resumed by running the same command again, end
with the weights and logged numbers of an uninterrupted run, bit for bit, and no unreadable file after
any kill.

`make test` kills each workload twice (seeded moments); `make soak` (PRETRAINLAB_SOAK=1) five times with
a seed per run, printing what happened (`-s`).
"""

from __future__ import annotations

import os
import random
import textwrap
from pathlib import Path

import pytest
from conftest import REPO_ROOT, TINY_SYNTHETIC, _yaml_inline, tiny_mae_overrides, tiny_run_overrides
from harness import Workload, assert_same_outputs, run_once, run_with_kills

SOAK = os.environ.get("PRETRAINLAB_SOAK") == "1"
KILLS = 5 if SOAK else 2
SEED = int(os.environ.get("PRETRAINLAB_SOAK_SEED", "0"))
CONFIGS = REPO_ROOT / "configs"


def _without_output_root(overrides: list[str]) -> list[str]:
    return [item for item in overrides if not item.startswith("output_root=")]


def pretraining(data: Path) -> Workload:
    """SimCLR on the tiny shapes, 8 epochs of 6 steps, a checkpoint every 2 steps, then kNN."""
    overrides = tiny_run_overrides(data, Path("unused"), **{
        "engine.max_epochs": 8, "engine.checkpoint_every_n_steps": 2})  # fmt: skip
    return Workload("pretrain", ["study", str(CONFIGS / "quickstart.yaml"), *_without_output_root(overrides)])


def sweep(data: Path, folder: Path) -> Workload:
    """Two variants of the tiny pretraining: the sweep continues its unfinished variants."""
    sweep_file = folder / "soak_sweep.yaml"
    sweep_file.write_text(textwrap.dedent(f"""
        study: soak_sweep
        base: {CONFIGS / "quickstart.yaml"}
        metric: knn_top1
        variants:
          temperature_02: {{method.temperature: 0.2}}
          temperature_05: {{method.temperature: 0.5}}
    """))
    overrides = tiny_run_overrides(data, Path("unused"), **{"engine.checkpoint_every_n_steps": 3})
    return Workload("sweep", ["sweep", str(sweep_file), *_without_output_root(overrides)])


def w4_loop(data: Path) -> Workload:
    """W4's study loop: seg on the random init, then per epoch pretrain -> seg -> reconstruct."""
    overrides = tiny_mae_overrides(data, Path("unused"), **{
        "study.every_epochs": 1, "method.mask_method": "segments", "eval.seg.mode": "frozen",
        "eval.seg.augment": False, "eval.seg.head": {"name": "seg_linear"}, "eval.seg.iterations": 8,
        "eval.seg.batch_size": 2, "eval.seg.eval_batch_size": 2, "eval.seg.num_examples": 1,
        "engine.checkpoint_every_n_steps": 1})  # fmt: skip
    return Workload("w4_loop", ["study", str(CONFIGS / "w4_mae" / "study.yaml"), *_without_output_root(overrides)])


def w2_online(data: Path, folder: Path) -> Workload:
    """W2's online runner: the source model, then three rain domains of 2 steps each."""
    values = {
        "data.root": str(data), "data.synthetic": TINY_SYNTHETIC, "engine.precision": "32",
        "engine.progress_bar": False, "eval.seg.iterations": 4, "eval.seg.warmup_iters": 0,
        "eval.seg.batch_size": 2, "eval.seg.eval_batch_size": 2, "online.sequence": ["clear", "25", "200"],
        "online.steps_per_domain": 2, "online.batch_size": 2, "online.domains_root": str(folder / "rain"),
        "online.replay": {"buffer": 4, "mode": "rare_class", "min_pixels": 10},
    }  # fmt: skip
    overrides = [f"{key}={_yaml_inline(value)}" for key, value in values.items()]
    return Workload("w2_online", ["study", str(CONFIGS / "w2_uda" / "rain_sequence.yaml"), *overrides])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pretrain", "sweep", "w4_loop", "w2_online"])
def test_killed_and_resumed_runs_end_as_the_uninterrupted_run(name: str, tiny_synthetic: Path, tmp_path: Path) -> None:
    workload = {
        "pretrain": lambda: pretraining(tiny_synthetic),
        "sweep": lambda: sweep(tiny_synthetic, tmp_path),
        "w4_loop": lambda: w4_loop(tiny_synthetic),
        "w2_online": lambda: w2_online(tiny_synthetic, tmp_path),
    }[name]()
    startup_seconds, reference_seconds = run_once(workload, tmp_path / "uninterrupted", REPO_ROOT)
    rng = random.Random(f"{name}-{SEED}")
    result = run_with_kills(workload, tmp_path / "killed", REPO_ROOT, kills=KILLS, startup_seconds=startup_seconds,
                            reference_seconds=reference_seconds, rng=rng)  # fmt: skip
    result.compared_files = assert_same_outputs(tmp_path / "uninterrupted", tmp_path / "killed")
    print(f"soak {name}: {result.kills} kills at {result.kill_moments} s of a {reference_seconds:.1f} s run "
          f"(start-up {startup_seconds:.1f} s), {result.kills_after_a_checkpoint} after a checkpoint, "
          f"{result.attempts} attempts, {result.compared_files} files identical")  # fmt: skip
    assert result.kills >= min(KILLS, 2) and result.kills_after_a_checkpoint >= 1 and result.compared_files > 0

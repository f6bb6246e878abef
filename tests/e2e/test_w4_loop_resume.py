"""W4's pretrain <-> segmentation loop (configs/w4_mae/study.yaml): killed during an evaluation, the same
command continues and gives the mIoU series of an uninterrupted run; finished evaluations are not redone."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO_ROOT, tiny_mae_overrides

from pretrainlab.config import load_config
from pretrainlab.study.runner import run_study

STUDY = REPO_ROOT / "configs" / "w4_mae" / "study.yaml"
SEG_ITERATIONS = 8

KILLER = textwrap.dedent(
    """
    import os, sys
    from pretrainlab.config import load_config
    from pretrainlab.methods import segmentation
    from pretrainlab.study.runner import run_study

    original = segmentation.SegFinetune.training_step
    calls = []

    def training_step(self, batch, step):
        calls.append(1)
        if len(calls) == {kill_at}:
            os._exit(9)  # like SIGKILL: no cleanup
        return original(self, batch, step)

    segmentation.SegFinetune.training_step = training_step
    run_study(load_config(sys.argv[1], sys.argv[2:]))
    """
)


def overrides(data_root: Path, output_root: Path, mask_method: str) -> list[str]:
    return tiny_mae_overrides(data_root, output_root, **{
        "study.every_epochs": 1, "method.mask_method": mask_method, "eval.seg.mode": "frozen",
        "eval.seg.augment": False, "eval.seg.head": {"name": "seg_linear"}, "eval.seg.iterations": SEG_ITERATIONS,
        "eval.seg.batch_size": 2, "eval.seg.eval_batch_size": 2, "eval.seg.num_examples": 1,
    })  # fmt: skip


def seg_series(run_dir: Path) -> list[tuple[int, dict]]:
    results = [json.loads(path.read_text()) for path in sorted((run_dir / "eval").glob("epoch_*/seg/result.json"))]
    return sorted((r["epoch"], r["seg_miou"]) for r in results)


@pytest.mark.slow
def test_killed_during_an_evaluation_the_loop_continues_to_the_same_series(tiny_synthetic: Path, tmp_path: Path) -> None:
    reference_config = load_config(STUDY, overrides(tiny_synthetic, tmp_path / "a", "segments"))
    kinds = [p.name for p in reference_config.study.phases]
    assert kinds == ["seg", "pretrain", "seg", "reconstruct", "pretrain", "seg", "reconstruct"]
    run_study(reference_config)
    reference = seg_series(reference_config.run_dir)
    assert [epoch for epoch, _ in reference] == [0, 1, 2]
    assert set(reference[0][1]) == {"random_init"} and set(reference[1][1]) == {"pretrained"}

    arguments = [str(STUDY), *overrides(tiny_synthetic, tmp_path / "b", "segments")]
    kill_at = SEG_ITERATIONS + SEG_ITERATIONS // 2  # inside the finetuning of the epoch-1 evaluation
    killed = subprocess.run([sys.executable, "-c", KILLER.format(kill_at=kill_at), *arguments], cwd=REPO_ROOT,
                            capture_output=True, text=True, check=False, timeout=300)  # fmt: skip
    assert killed.returncode == 9, killed.stderr[-2000:]
    config = load_config(STUDY, arguments[1:])
    done = sorted(p.parent.relative_to(config.run_dir).as_posix() for p in config.run_dir.rglob("result.json"))
    assert done == ["eval/epoch_0/seg", "pretrain/01_to_epoch_1"]
    epoch_0 = (config.run_dir / "eval" / "epoch_0" / "seg" / "result.json").stat().st_mtime_ns

    run_study(config)
    assert seg_series(config.run_dir) == reference
    assert (config.run_dir / "eval" / "epoch_0" / "seg" / "result.json").stat().st_mtime_ns == epoch_0  # not redone

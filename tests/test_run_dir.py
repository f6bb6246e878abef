"""The run directory refuses checkpoints with code in them, from every reader."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from pretrainlab.cli import main
from pretrainlab.run_dir import RunDir, UnsafeCheckpointError, load_checkpoint, save_checkpoint


class _Payload:
    """Unpickling this calls os.system: what a malicious checkpoint would carry."""

    def __reduce__(self) -> tuple:
        return (os.system, ("touch pwned",))


def test_checkpoint_with_a_pickled_callable_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "payload": _Payload()}, path)
    with pytest.raises(UnsafeCheckpointError, match="refused: the checkpoint holds more than tensors"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_plain_checkpoint_round_trips_and_writes_atomically(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints" / "last.ckpt"
    save_checkpoint({"epoch": 3, "state_dict": {"w": torch.arange(3.0)}, "rng": ("MT19937", [1, 2], 0)}, path)
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 3 and torch.equal(loaded["state_dict"]["w"], torch.arange(3.0))
    assert not path.with_name("last.ckpt.tmp").exists()


def test_evaluate_refuses_a_run_whose_checkpoint_holds_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = RunDir(tmp_path / "run")
    run.write_config("name: run\n")
    run.checkpoint.parent.mkdir(parents=True)
    torch.save({"state_dict": {}, "payload": _Payload()}, run.checkpoint)
    assert main(["-q", "evaluate", "knn", "--run", str(run.path), "--no-random-init"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "refused" in error[0] and str(run.checkpoint) in error[0]
    assert not Path("pwned").exists()


@pytest.mark.parametrize(("saved", "completed"), [({"epoch": 2}, 3), ({"epoch": 2, "mid_epoch": False}, 3),
                                                  ({"epoch": 2, "mid_epoch": True}, 2)])  # fmt: skip
def test_checkpoint_epoch_counts_completed_epochs_only(tmp_path: Path, saved: dict, completed: int) -> None:
    run = RunDir(tmp_path / "run")
    assert run.checkpoint_epoch() == 0
    save_checkpoint({"state_dict": {}, **saved}, run.checkpoint)
    assert run.checkpoint_epoch() == completed  # a checkpoint written within epoch 2 (0-based) has completed 2

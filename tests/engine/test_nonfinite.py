"""A NaN / Inf loss stops the run with one line naming the step, the loss terms and the last checkpoint;
`engine.skip_nonfinite_steps: N` skips up to N such steps without touching the weights."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import REPO_ROOT, tiny_run_overrides
from torch import Tensor, nn
from torch.utils.data import Dataset, default_collate

from pretrainlab.data.train_data import EpochSampler, TrainData
from pretrainlab.engine.module import EngineModule, NonFiniteLossError
from pretrainlab.engine.optim import OptimConfig
from pretrainlab.engine.schedules import Schedules, StepValues
from pretrainlab.engine.trainer import EngineConfig, fit
from pretrainlab.methods.base import Method
from pretrainlab.methods.simclr import SimCLR
from pretrainlab.models.backbones.base import Backbone
from pretrainlab.run_dir import load_checkpoint, read_jsonl


class Points(Dataset):
    def __init__(self, num_points: int) -> None:
        self.points = torch.randn(num_points, 3, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, key: tuple[int, int]) -> Tensor:
        return self.points[key[1]]


class NonFiniteAtSteps(Method):
    """BatchNorm + linear; the loss is multiplied by `value` (NaN / Inf) at the iterations in `bad_steps`.
    Records the weights and BatchNorm statistics before every step, and the steps with post-step work."""

    def __init__(self, bad_steps: set[int], value: float = math.nan) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.norm = nn.BatchNorm1d(3)
        self.linear = nn.Linear(3, 1)
        self.bad_steps, self.value = bad_steps, value
        self.weights: list[Tensor] = []
        self.running_means: list[Tensor] = []
        self.post_steps: list[int] = []

    def training_step(self, batch: Tensor, step: StepValues) -> dict[str, Tensor]:
        self.weights.append(self.linear.weight.detach().clone())
        self.running_means.append(self.norm.running_mean.clone())
        prediction = self.linear(self.norm(batch))  # (B, 1); the forward moves the running statistics
        loss = prediction.square().mean() + 1.0
        if step.iteration in self.bad_steps:
            loss = loss * self.value
        return {"loss": loss, "loss_aux": 0.25 * prediction.abs().mean(), "prediction": prediction.mean().detach()}

    def after_optimizer_step(self, step: StepValues) -> None:
        self.post_steps.append(step.iteration)

    def eval_backbone(self) -> Backbone:
        raise AssertionError("not evaluated")


def fit_points(method: NonFiniteAtSteps, tmp_path: Path, *, skip_nonfinite_steps: int = 0) -> None:
    """8 points, batches of 2: 4 steps per epoch, 2 epochs, a checkpoint at each epoch end."""
    data = TrainData(Points(8), EpochSampler(8, seed=0), default_collate, 2)
    optim = OptimConfig(name="adamw", lr=0.1, min_lr=0.1, warmup_epochs=0.0, clip_grad=None, scale_lr_with_batch=False)

    def schedules(steps_per_epoch: int, world_size: int) -> Schedules:
        return Schedules(steps_per_epoch, np.full(2 * steps_per_epoch, 0.1), np.full(2 * steps_per_epoch, 0.01))

    engine = EngineConfig(precision="32", progress_bar=False, log_every_n_steps=1,
                          skip_nonfinite_steps=skip_nonfinite_steps)  # fmt: skip
    fit(method, data, optim=optim, make_schedules=schedules, engine=engine, max_epochs=2,
        metrics_path=tmp_path / "metrics.jsonl", logs_dir=tmp_path / "logs", checkpoint=tmp_path / "last.ckpt")  # fmt: skip


def test_a_nan_loss_stops_the_run_naming_step_terms_and_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(NonFiniteLossError) as raised:
        fit_points(NonFiniteAtSteps({5}), tmp_path)
    message = str(raised.value)
    assert re.match(r"non-finite loss at step 5 \(epoch 1\): loss=nan, loss_aux=\d\.\d+; ", message), message
    assert f"last good checkpoint: {tmp_path / 'last.ckpt'} (step 4)" in message and "\n" not in message
    assert "prediction" not in message  # only the loss terms
    assert load_checkpoint(tmp_path / "last.ckpt")["global_step"] == 4  # left as it was


def test_an_inf_loss_before_the_first_checkpoint_says_there_is_none(tmp_path: Path) -> None:
    with pytest.raises(FloatingPointError, match=r"at step 1 \(epoch 0\): loss=inf, .*no checkpoint yet"):
        fit_points(NonFiniteAtSteps({1}, value=math.inf), tmp_path)


def test_skipped_steps_leave_weights_and_buffers_and_count(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    method = NonFiniteAtSteps({2, 5})
    with caplog.at_level(logging.WARNING):
        fit_points(method, tmp_path, skip_nonfinite_steps=2)
    assert method.post_steps == [0, 1, 3, 4, 6, 7]  # no EMA-like work after a skipped step; 8 steps in all
    for skipped in (2, 5):  # weights[k], running_means[k]: before step k
        assert torch.equal(method.weights[skipped + 1], method.weights[skipped])
        assert torch.equal(method.running_means[skipped + 1], method.running_means[skipped])
        assert not torch.equal(method.weights[skipped], method.weights[skipped - 1])  # a trained step moves them
    warnings = [r.getMessage() for r in caplog.records if "non-finite" in r.getMessage()]
    assert len(warnings) == 2 and warnings[0].startswith("non-finite loss at step 2 (epoch 0): loss=nan, loss_aux=")
    assert warnings[1].endswith("skipped (2 of engine.skip_nonfinite_steps=2)")
    counts = {m["step"]: m["train/skipped_nonfinite"] for m in read_jsonl(tmp_path / "metrics.jsonl")}
    assert counts == {0: 0, 1: 0, 2: 1, 3: 1, 4: 1, 5: 2, 6: 2, 7: 2}
    assert load_checkpoint(tmp_path / "last.ckpt")["skipped_nonfinite"] == 2


def test_one_non_finite_step_more_than_allowed_stops_the_run(tmp_path: Path) -> None:
    method = NonFiniteAtSteps({2, 5})
    with pytest.raises(NonFiniteLossError, match=r"step 5 .*1 earlier non-finite steps were skipped"):
        fit_points(method, tmp_path, skip_nonfinite_steps=1)
    assert method.post_steps == [0, 1, 3, 4]


def test_cli_reports_a_nan_loss_in_one_line(
    tiny_synthetic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pretrainlab.cli import main

    original = SimCLR.training_step

    def nan_at_step_7(self: SimCLR, batch: object, step: StepValues) -> dict[str, Tensor]:
        outputs = original(self, batch, step)
        return {**outputs, "loss": outputs["loss"] * math.nan} if step.iteration == 7 else outputs

    monkeypatch.setattr(SimCLR, "training_step", nan_at_step_7)
    overrides = tiny_run_overrides(tiny_synthetic, tmp_path, name="diverged", **{"method.name": "simclr"})
    code = main(["-q", "pretrain", str(REPO_ROOT / "configs" / "quickstart.yaml"), *overrides])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith("error: non-finite loss at step 7 (epoch 1): loss=nan")
    assert lines[0].endswith(f"{tmp_path / 'diverged' / 'pretrain' / 'checkpoints' / 'last.ckpt'} (step 6); stopping")


def _check_agreement(rank: int, init_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        assert not EngineModule.is_finite_everywhere(rank == 0, torch.device("cpu"))  # not finite on rank 1 only
        assert EngineModule.is_finite_everywhere(True, torch.device("cpu"))
    finally:
        dist.destroy_process_group()


def test_processes_agree_when_the_loss_is_not_finite_on_one(tmp_path: Path) -> None:
    """Every process skips (or stops at) a step that is not finite on any of them, so none waits for the others."""
    mp.spawn(_check_agreement, args=(str(tmp_path / "rendezvous"),), nprocs=2, join=True)

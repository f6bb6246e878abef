"""A step whose outputs hold no `loss*` entry is inference only: no update, no post-step work, but it counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, default_collate

from pretrainlab.data.train_data import EpochSampler, TrainData
from pretrainlab.engine.optim import OptimConfig
from pretrainlab.engine.schedules import Schedules, StepValues
from pretrainlab.engine.trainer import EngineConfig, fit
from pretrainlab.methods.base import Method
from pretrainlab.models.backbones.base import Backbone


class Points(Dataset):
    """The engine's samplers yield (epoch, index) keys."""

    def __init__(self, points: Tensor) -> None:
        self.points = points

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, key: tuple[int, int]) -> Tensor:
        return self.points[key[1]]


class TrainsOnEvenIterations(Method):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 1)
        self.iterations: list[int] = []
        self.post_steps: list[int] = []
        self.weights: list[Tensor] = []

    def training_step(self, batch: Tensor, step: StepValues) -> dict[str, Tensor]:
        self.iterations.append(step.iteration)
        self.weights.append(self.linear.weight.detach().clone())
        prediction = self.linear(batch).mean()  # batch: (B, 3)
        return {"loss": prediction**2} if step.iteration % 2 == 0 else {"prediction": prediction.detach()}

    def after_optimizer_step(self, step: StepValues) -> None:
        self.post_steps.append(step.iteration)

    def eval_backbone(self) -> Backbone:
        raise AssertionError("not evaluated")


def test_a_step_without_loss_changes_nothing_but_counts(tmp_path: Path) -> None:
    torch.manual_seed(0)
    method = TrainsOnEvenIterations()
    data = TrainData(Points(torch.randn(12, 3)), EpochSampler(12, seed=0, shuffle=False), default_collate, 2)
    optim = OptimConfig(name="adamw", lr=0.1, min_lr=0.1, warmup_epochs=0.0, weight_decay=0.5, weight_decay_end=0.5,
                        clip_grad=None, scale_lr_with_batch=False)  # fmt: skip

    def schedules(steps_per_epoch: int, world_size: int) -> Schedules:
        return Schedules(steps_per_epoch, np.full(steps_per_epoch, 0.1), np.full(steps_per_epoch, 0.5))

    fit(method, data, optim=optim, make_schedules=schedules, engine=EngineConfig(precision="32", progress_bar=False),
        max_epochs=1, metrics_path=tmp_path / "metrics.jsonl", logs_dir=tmp_path / "logs", checkpoint=None)  # fmt: skip
    assert method.iterations == [0, 1, 2, 3, 4, 5] and method.post_steps == [0, 2, 4]
    weights = method.weights  # weights[k]: before step k
    for inference in (1, 3):  # no weight decay, no Adam momentum: bit-identical across an inference-only step
        assert torch.equal(weights[inference + 1], weights[inference])
        assert not torch.equal(weights[inference], weights[inference - 1])  # the training step before did move them

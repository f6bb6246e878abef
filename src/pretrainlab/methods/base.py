"""What every pretraining method provides to the engine.

`training_step` returns `dict[str, Tensor]`: every key starting with `loss` is summed
into the objective (weights already applied by the method), the rest is only logged.
"""

from __future__ import annotations

import abc

from torch import Tensor, nn

from pretrainlab.engine.schedules import StepValues
from pretrainlab.models.backbones.base import Backbone


class Method(nn.Module, abc.ABC):
    @abc.abstractmethod
    def training_step(self, views: list[Tensor], step: StepValues, labels: Tensor | None = None) -> dict[str, Tensor]:
        """Losses and logged values for one batch of augmented views [(B, C, H, W), ...].

        `labels` (B,) are the class labels of the batch; self-supervised methods ignore them.
        """

    @abc.abstractmethod
    def eval_backbone(self) -> Backbone:
        """The backbone whose features are evaluated (kNN, probes) and exported."""

    def frozen_parameters(self, step: StepValues) -> list[nn.Parameter]:
        """Parameters whose gradient is dropped at this step (e.g. DINO's last layer early on)."""
        return []

    def after_optimizer_step(self, step: StepValues) -> None:
        """Work after the weights moved (e.g. the EMA teacher update)."""

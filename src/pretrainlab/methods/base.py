"""What every method provides to the engine, and the method registry.

A method's file holds what makes it that method: its config (registered in `METHODS`
with its builder), the data it trains on (`MethodConfig.train_data`: its views or batch
type), the schedules it asks for (`MethodConfig.schedules`), and its step:
`training_step(batch, step)` returns `dict[str, Tensor]`; every key starting with `loss`
is summed into the objective (weights already applied by the method), the rest is only
logged. The step receives the schedule values of this iteration and never reads a config.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from torch import Tensor, nn

from pretrainlab.config.component import Component
from pretrainlab.engine.schedules import StepValues
from pretrainlab.models.backbones.base import Backbone, build_backbone
from pretrainlab.models.model import head_input_dim
from pretrainlab.models.necks.base import Neck, build_neck
from pretrainlab.registry import Registry

if TYPE_CHECKING:
    from pretrainlab.config.schema import Config


class Method(nn.Module, abc.ABC):
    @abc.abstractmethod
    def training_step(self, batch: Any, step: StepValues) -> dict[str, Tensor]:
        """Losses and logged values for one batch of the type the method's `train_data` yields."""

    @abc.abstractmethod
    def eval_backbone(self) -> Backbone:
        """The backbone whose features are evaluated (kNN, probes, segmentation) and exported."""

    def frozen_parameters(self, step: StepValues) -> list[nn.Parameter]:
        """Parameters whose gradient is dropped at this step (e.g. DINO's last layer early on)."""
        return []

    def after_optimizer_step(self, step: StepValues) -> None:
        """Work after the weights moved (e.g. the EMA teacher update)."""


class MethodConfig(Component):
    """Base of every pretraining method's config."""

    uses_labels: ClassVar[bool] = False  # the step reads class labels
    uses_neck: ClassVar[bool] = True  # the model is backbone -> neck -> heads (else neck must be `none`)
    # the config builds `masked_images(config, images=, masks=, whole_images=)` and the method has
    # `reconstruct(batch)` for `collate_masked` batches of them, like MAE's (the `reconstruct` phase)
    reconstructs: ClassVar[bool] = False

    def check(self, config: Config) -> None:
        """Raise ValueError (naming the dotted key) when the rest of `config` does not fit this method."""
        if not self.uses_neck and (config.neck.name != "none" or config.neck.restore_stride is not None):
            raise ValueError(f"neck: method {self.name} has no neck; got neck.name={config.neck.name!r}")

    def schedules(self, total_iters: int, steps_per_epoch: int) -> dict[str, np.ndarray]:
        """The method's own per-iteration schedules by name, each of shape (total_iters,)."""
        return {}

    # Subclasses define `train_data(self, config: Config) -> TrainData`: the training set, its sampler and
    # collate, yielding the batches their method's `training_step` takes.

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """A method config (one with a `name`) must say what it trains on: checked when the class is defined."""
        super().__pydantic_init_subclass__(**kwargs)
        if "name" in cls.model_fields and not callable(getattr(cls, "train_data", None)):
            raise TypeError(f"{cls.__name__} must define train_data(self, config) -> TrainData")


METHODS: Registry[MethodConfig] = Registry("method", MethodConfig)


def build_method(config: Config) -> Method:
    """The method `config.method` names, with its model built from `config` (seeded by the caller)."""
    return METHODS.get(config.method.name).build(config)


@dataclass
class Trunk:
    """A method's backbone and neck, built from a config, and the width of the vector its heads read."""

    backbone: Backbone
    neck: Neck | None
    restore_stride: int | None
    head_in_dim: int

    @property
    def taps(self) -> list[str]:
        """The `backbone` and `neck` taps of a model on this trunk."""
        return ["backbone", *(["neck"] if self.neck is not None else [])]


def build_trunk(config: Config) -> Trunk:
    """Backbone (`config.backbone`, `config.in_chans` channels) and neck (`config.neck`)."""
    backbone = build_backbone(config.backbone, config.in_chans)
    neck = build_neck(config.neck, backbone)
    restore_stride = config.neck.restore_stride
    return Trunk(backbone, neck, restore_stride, head_input_dim(backbone, neck, restore_stride))


def trunk_taps(config: Config) -> list[str]:
    """The trunk's taps, known from the config alone (for load-time checks)."""
    return ["backbone", *(["neck"] if config.neck.name != "none" else [])]

"""Several named heads on one feature; their losses are summed with per-task weights."""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field, model_validator
from torch import Tensor, nn

from pretrainlab.models.heads.base import HEADS, ClassifierHeadConfig, HeadConfig, build_head


class MultiTaskHead(nn.Module):
    """(B, D) -> {task: (B, K_task)}: every task head reads the same feature.

    The model exposes each output as the tap `head:<task>`; `weighted_sum` is how a
    method combines the per-task losses.

    Args:
        heads: task name -> head module (names are letters, digits and '_').
        weights: task name -> loss weight; tasks not listed weigh 1.
    """

    def __init__(self, heads: dict[str, nn.Module], weights: dict[str, float] | None = None) -> None:
        super().__init__()
        if not heads:
            raise ValueError("MultiTaskHead needs at least one task head")
        bad = [task for task in heads if not re.fullmatch(r"\w+", task)]
        if bad:
            raise ValueError(f"task names must be letters, digits or '_', got {bad}")
        weights = weights or {}
        unknown = sorted(set(weights) - set(heads))
        if unknown:
            raise ValueError(f"weights for unknown tasks {unknown}; tasks: {', '.join(heads)}")
        self.heads = nn.ModuleDict(heads)
        self.weights = {task: float(weights.get(task, 1.0)) for task in heads}

    def forward(self, x: Tensor) -> dict[str, Tensor]:  # (B, D) -> {task: (B, K_task)}
        return {task: head(x) for task, head in self.heads.items()}

    def weighted_sum(self, losses: dict[str, Tensor]) -> Tensor:
        """sum_task weight_task * losses[task]; every task must have a loss."""
        missing = sorted(set(self.heads) - set(losses))
        if missing:
            raise KeyError(f"no loss for tasks {missing}; got {sorted(losses)}")
        return sum(self.weights[task] * losses[task] for task in self.heads)  # type: ignore[return-value]


class MultiTaskHeadConfig(HeadConfig):
    """Several named classification heads on one feature; their losses are summed with `weights`."""

    name: Literal["multi_task"]
    predicts_classes: ClassVar[bool] = True
    tasks: dict[str, HEADS.config_type("linear")] = Field(min_length=1, description="task -> head; taps head:<task>")
    weights: dict[str, float] = Field(default_factory=dict, description="task name -> loss weight (default 1)")

    @model_validator(mode="after")
    def _check_tasks(self) -> MultiTaskHeadConfig:
        bad = [task for task in self.tasks if not re.fullmatch(r"\w+", task)]
        if bad:
            raise ValueError(f"task names must be letters, digits or '_', got {bad}")
        not_classifiers = [task for task, head in self.tasks.items() if not isinstance(head, ClassifierHeadConfig)]
        if not_classifiers:
            raise ValueError(f"tasks {not_classifiers}: a multi-task head takes classification heads (linear, cls)")
        unknown = sorted(set(self.weights) - set(self.tasks))
        if unknown:
            raise ValueError(f"weights for unknown tasks {unknown}; tasks: {', '.join(self.tasks)}")
        if any(weight < 0 for weight in self.weights.values()):
            raise ValueError(f"task weights must be >= 0, got {self.weights}")
        return self

    def tap_names(self, head_name: str) -> list[str]:
        return [f"head:{task}" for task in self.tasks]

    def with_num_classes(self, num_classes: int) -> MultiTaskHeadConfig:
        tasks = {task: head.with_num_classes(num_classes) for task, head in self.tasks.items()}
        return self.model_copy(update={"tasks": tasks})


@HEADS.register(MultiTaskHeadConfig)
def build_multi_task_head(config: MultiTaskHeadConfig, in_dim: int) -> MultiTaskHead:
    return MultiTaskHead({task: build_head(head, in_dim) for task, head in config.tasks.items()}, config.weights)

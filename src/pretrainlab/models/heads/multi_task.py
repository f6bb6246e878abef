"""Several named heads on one feature; their losses are summed with per-task weights."""

from __future__ import annotations

import re

from torch import Tensor, nn


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

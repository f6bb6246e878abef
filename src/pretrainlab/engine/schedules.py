"""Per-iteration schedules, precomputed once (as in DINO / DINOv2).

The engine owns the lr and weight-decay schedules; a method asks for its own (DINO: teacher
momentum and temperature) by name, and its step receives the values of the current
iteration in `StepValues` — it never reads a config. Schedules are built from the number
of steps *per rank* (the engine knows it once the sharded loader exists), so a run on N
processes reaches the end of every schedule at its last step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np


def cosine_schedule(
    base: float, final: float, total_iters: int, *, warmup_iters: int = 0, warmup_start: float = 0.0
) -> np.ndarray:
    """Linear warm-up from `warmup_start` to `base`, then cosine from `base` to `final`; shape (total_iters,)."""
    if total_iters < 1:
        raise ValueError(f"total_iters must be >= 1, got {total_iters}")
    warmup_iters = min(warmup_iters, total_iters)
    warmup = np.linspace(warmup_start, base, warmup_iters, endpoint=False)
    steps = np.arange(total_iters - warmup_iters)
    cosine = final + 0.5 * (base - final) * (1 + np.cos(math.pi * steps / max(len(steps), 1)))
    return np.concatenate([warmup, cosine])


def poly_schedule(
    base: float,
    final: float,
    total_iters: int,
    *,
    power: float = 0.9,
    warmup_iters: int = 0,
    warmup_start_factor: float = 1e-6,
) -> np.ndarray:
    """MMSegmentation's `LinearLR` warm-up + `PolyLR`, by iteration; shape (total_iters,).

    Warm-up: linear from `base * warmup_start_factor` towards `base` over `warmup_iters`;
    then `final + (base - final) * (1 - t / T) ** power` with t counted from the end of the
    warm-up and T = total_iters - warmup_iters (so the last value is just above `final`).
    """
    if total_iters < 1:
        raise ValueError(f"total_iters must be >= 1, got {total_iters}")
    if power < 0:
        raise ValueError(f"power must be >= 0, got {power}")
    warmup_iters = min(warmup_iters, total_iters)
    factors = warmup_start_factor + (1.0 - warmup_start_factor) * np.arange(warmup_iters) / max(warmup_iters, 1)
    steps = np.arange(total_iters - warmup_iters)
    poly = final + (base - final) * (1.0 - steps / max(len(steps), 1)) ** power
    return np.concatenate([base * factors, poly])


@dataclass(frozen=True)
class StepValues:
    """Schedule values for one training iteration: the engine's lr / weight decay and the
    method's own schedules (`step["teacher_momentum"]`)."""

    iteration: int
    epoch: int
    lr: float
    weight_decay: float
    values: Mapping[str, float] = field(default_factory=dict)

    def __getitem__(self, name: str) -> float:
        if name not in self.values:
            raise KeyError(f"no schedule '{name}' at this step; the method asked for: {', '.join(self.values) or 'none'}")
        return self.values[name]


@dataclass
class Schedules:
    """Per-iteration arrays of equal length (total iterations of the run, per rank)."""

    steps_per_epoch: int
    lr: np.ndarray
    weight_decay: np.ndarray
    values: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        lengths = {name: len(array) for name, array in {"weight_decay": self.weight_decay, **self.values}.items()}
        bad = {name: n for name, n in lengths.items() if n != len(self.lr)}
        if bad:
            raise ValueError(f"schedules differ in length from lr ({len(self.lr)}): {bad}")

    @property
    def total_iters(self) -> int:
        return len(self.lr)

    def at(self, iteration: int) -> StepValues:
        i = min(iteration, self.total_iters - 1)
        return StepValues(
            iteration=iteration,
            epoch=iteration // self.steps_per_epoch,
            lr=float(self.lr[i]),
            weight_decay=float(self.weight_decay[i]),
            values={name: float(array[i]) for name, array in self.values.items()},
        )

    def last(self) -> StepValues:
        return self.at(self.total_iters - 1)

"""Per-iteration schedules, precomputed once (as in DINO / DINOv2): lr, weight decay,
teacher momentum and teacher temperature. Methods receive the values of the current
iteration as arguments and never read a config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pretrainlab.config.schema import Config, DINOConfig


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
    """Schedule values for one training iteration."""

    iteration: int
    epoch: int
    lr: float
    weight_decay: float
    teacher_momentum: float
    teacher_temp: float


@dataclass
class Schedules:
    steps_per_epoch: int
    lr: np.ndarray
    weight_decay: np.ndarray
    teacher_momentum: np.ndarray
    teacher_temp: np.ndarray

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
            teacher_momentum=float(self.teacher_momentum[i]),
            teacher_temp=float(self.teacher_temp[i]),
        )


def build_schedules(config: Config, steps_per_epoch: int, world_size: int = 1) -> Schedules:
    """All schedules of a run; the peak lr is scaled by the global batch / 256 when asked."""
    optim, epochs = config.optim, config.engine.max_epochs
    total = epochs * steps_per_epoch
    peak_lr = optim.lr
    if optim.scale_lr_with_batch:
        peak_lr *= config.data.batch_size * world_size / 256
    lr = cosine_schedule(peak_lr, optim.min_lr, total, warmup_iters=int(optim.warmup_epochs * steps_per_epoch))
    weight_decay = cosine_schedule(optim.weight_decay, optim.weight_decay_end, total)
    method = config.method
    if isinstance(method, DINOConfig):
        momentum = cosine_schedule(method.momentum_teacher, 1.0, total)
        warmup = method.warmup_teacher_temp_epochs * steps_per_epoch
        teacher_temp = np.concatenate(
            [
                np.linspace(method.warmup_teacher_temp, method.teacher_temp, warmup),
                np.full(total - warmup, method.teacher_temp),
            ]
        )
    else:
        momentum = np.ones(total)
        teacher_temp = np.ones(total)
    return Schedules(steps_per_epoch, lr, weight_decay, momentum, teacher_temp)

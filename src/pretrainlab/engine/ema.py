"""Exponential moving average of weights: teacher <- m * teacher + (1 - m) * student."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def ema_update_(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """In-place EMA of parameters (one fused `_foreach_` call); floating buffers follow the same EMA."""
    teacher_params = list(teacher.parameters())
    student_params = list(student.parameters())
    if len(teacher_params) != len(student_params):
        raise ValueError(f"teacher has {len(teacher_params)} parameters, student {len(student_params)}")
    torch._foreach_lerp_(teacher_params, student_params, 1.0 - momentum)
    teacher_buffers = [b for b in teacher.buffers() if b.is_floating_point()]
    student_buffers = [b for b in student.buffers() if b.is_floating_point()]
    if teacher_buffers:
        torch._foreach_lerp_(teacher_buffers, student_buffers, 1.0 - momentum)

"""Param groups with lr multipliers per pattern and the no-decay set."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pretrainlab.engine.optim import OptimConfig
from pretrainlab.engine.freeze import set_trainable_for_mode
from pretrainlab.engine.optim import (
    build_optimizer,
    param_groups,
    set_lr_and_weight_decay,
)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.pos_embed = nn.Parameter(torch.zeros(1, 4, 8))
        self.backbone.proj = nn.Linear(8, 8)
        self.backbone.norm = nn.LayerNorm(8)
        self.head = nn.Module()
        self.head.norm = nn.BatchNorm2d(8)
        self.head.conv = nn.Conv2d(8, 3, 1)


def scale_and_decay(groups: list[dict]) -> dict[str, tuple[float, bool]]:
    return {name: (g["lr_scale"], g["apply_weight_decay"]) for g in groups for name in g["names"]}


def test_multipliers_and_no_decay_set() -> None:
    groups = param_groups(Net(), {"head": 10.0, "head.norm": 2.0})
    assert scale_and_decay(groups) == {
        "backbone.pos_embed": (1.0, False),  # position embedding: no decay
        "backbone.proj.weight": (1.0, True),
        "backbone.proj.bias": (1.0, False),
        "backbone.norm.weight": (1.0, False),
        "backbone.norm.bias": (1.0, False),
        "head.norm.weight": (2.0, False),  # the longest matching pattern wins
        "head.norm.bias": (2.0, False),
        "head.conv.weight": (10.0, True),
        "head.conv.bias": (10.0, False),
    }


def test_overlapping_patterns_never_put_a_parameter_in_two_groups() -> None:
    model = Net()
    groups = param_groups(model, {"head": 10.0, "*.weight": 3.0, "head.conv": 5.0, "*": 0.5})
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    optimizer = build_optimizer(model, OptimConfig(name="sgd", lr_multipliers={"head": 10.0, "*.weight": 3.0}))  # torch also checks
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(ids)


def test_only_trainable_parameters_and_lr_scale_applied() -> None:
    model = Net()
    set_trainable_for_mode(model, "frozen")
    optimizer = build_optimizer(model, OptimConfig(name="adamw", lr_multipliers={"head.conv": 10.0}))
    names = {name for g in optimizer.param_groups for name in g["names"]}
    assert names == {"head.norm.weight", "head.norm.bias", "head.conv.weight", "head.conv.bias"}
    set_lr_and_weight_decay(optimizer, 0.01, 0.05)
    for group in optimizer.param_groups:
        assert group["lr"] == pytest.approx(0.01 * group["lr_scale"])
        assert group["weight_decay"] == (0.05 if group["apply_weight_decay"] else 0.0)
    assert {g["lr_scale"] for g in optimizer.param_groups} == {1.0, 10.0}


def test_multiplier_pattern_matching_no_trainable_parameter_is_an_error() -> None:
    model = Net()
    set_trainable_for_mode(model, "frozen")
    with pytest.raises(ValueError, match="lr multiplier pattern 'backbone' matches no parameter"):
        param_groups(model, {"backbone": 0.1})

from __future__ import annotations

import torch
from torch import nn

from pretrainlab.engine.optim import OptimConfig
from pretrainlab.engine.optim import (
    build_optimizer,
    clip_gradients_per_parameter,
    param_groups,
)


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, 4, 8))
        self.linear = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.frozen = nn.Linear(8, 8)
        self.frozen.requires_grad_(False)


def test_each_trainable_parameter_in_exactly_one_group() -> None:
    model = Toy()
    groups = param_groups(model)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}
    decay = next(g for g in groups if g["apply_weight_decay"])["params"]
    assert [id(p) for p in decay] == [id(model.linear.weight)]


def test_optimizer_only_sees_trainable_parameters() -> None:
    model = Toy()
    for name in ("adamw", "sgd", "lars"):
        optimizer = build_optimizer(model, OptimConfig(name=name))
        seen = {id(p) for g in optimizer.param_groups for p in g["params"]}
        assert id(model.frozen.weight) not in seen


def test_per_parameter_clipping() -> None:
    a, b = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(2))
    a.grad, b.grad = torch.tensor([3.0, 4.0, 0.0]), torch.tensor([0.3, 0.4])
    holder = nn.Module()
    holder.a, holder.b = a, b
    clip_gradients_per_parameter(holder, 1.0)
    torch.testing.assert_close(a.grad.norm(), torch.tensor(1.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(b.grad, torch.tensor([0.3, 0.4]))  # already below the limit

"""LARS: solo-learn's reference steps, a hand-computed trust ratio, our param groups, argument errors."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import load_reference
from torch import nn

from pretrainlab.engine.lars import LARS
from pretrainlab.engine.optim import param_groups, set_lr_and_weight_decay


@pytest.mark.reference
def test_matches_solo_learn_reference_steps() -> None:
    reference = load_reference("lars")
    for case in range(int(reference["n_cases"])):
        key = f"case{case}/"
        params = [nn.Parameter(torch.from_numpy(reference[f"{key}p{j}_init"]).clone())
                  for j in range(int(reference[key + "n_params"]))]  # fmt: skip
        momentum = float(reference[key + "momentum"])
        optimizer = LARS(
            params,
            lr=float(reference[key + "lr"]),
            momentum=momentum,
            dampening=float(reference[key + "dampening"]),
            weight_decay=float(reference[key + "weight_decay"]),
            nesterov=bool(reference[key + "nesterov"]),
            eta=float(reference[key + "eta"]),
            eps=float(reference[key + "eps"]),
            clip_lr=bool(reference[key + "clip_lr"]),
            exclude_bias_n_norm=bool(reference[key + "exclude_bias_n_norm"]),
        )
        for step in range(int(reference[key + "n_steps"])):
            for j, param in enumerate(params):
                param.grad = torch.from_numpy(reference[f"{key}p{j}_grad{step}"]).clone()
            optimizer.step()
            for j, param in enumerate(params):
                where = f"case {case} step {step} param {j} ({reference[key + 'param_names'][j]})"
                expected = torch.from_numpy(reference[f"{key}p{j}_after{step}"])
                assert float((param.detach() - expected).abs().max()) <= 1e-6, where
                if momentum != 0:
                    expected_buffer = torch.from_numpy(reference[f"{key}p{j}_buf{step}"])
                    error = float((optimizer.state[param]["momentum_buffer"] - expected_buffer).abs().max())
                    assert error <= 1e-5 * float(expected_buffer.abs().max()), where + " momentum buffer"


def _weight_and_grad() -> tuple[nn.Parameter, torch.Tensor]:
    weight = nn.Parameter(torch.tensor([[3.0, 4.0]], dtype=torch.float64))  # ||p|| = 5
    return weight, torch.tensor([[0.0, 0.5]], dtype=torch.float64)  # ||g|| = 0.5


def test_trust_ratio_by_hand() -> None:
    weight, grad = _weight_and_grad()
    weight.grad = grad
    LARS([weight], lr=0.1, weight_decay=0.01, eta=0.02, eps=0.0).step()
    trust = 0.02 * 5.0 / (0.5 + 0.01 * 5.0)  # 0.1 / 0.55
    start = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    expected = start - 0.1 * trust * (grad + 0.01 * start)
    torch.testing.assert_close(weight.detach(), expected, rtol=1e-14, atol=0.0)


def test_clip_lr_caps_the_ratio_at_one_and_a_zero_lr_moves_nothing() -> None:
    weight, grad = _weight_and_grad()
    weight.grad = grad
    LARS([weight], lr=0.1, weight_decay=0.01, eta=1.0, clip_lr=True).step()  # t = 5 / 0.55 > lr: plain SGD
    sgd_step = torch.tensor([[3.0 - 0.1 * 0.03, 4.0 - 0.1 * 0.54]], dtype=torch.float64)  # lr * (g + wd * p)
    torch.testing.assert_close(weight.detach(), sgd_step)
    weight.grad = grad
    LARS([weight], lr=0.0, eta=0.02, clip_lr=True).step()  # t / 0 = inf, clipped to 1, step 0
    assert torch.isfinite(weight).all()
    torch.testing.assert_close(weight.detach(), torch.tensor([[2.997, 3.946]], dtype=torch.float64))


def test_zero_parameter_gets_the_raw_gradient_without_decay() -> None:
    bias = nn.Parameter(torch.zeros(3, 2))
    bias.grad = torch.tensor([[1.0, -2.0], [0.0, 0.5], [3.0, 0.0]])
    LARS([bias], lr=0.5, weight_decay=0.1, eta=0.001).step()
    torch.testing.assert_close(bias.detach(), -0.5 * bias.grad)


def test_momentum_dampening_and_nesterov() -> None:
    # 1-D and excluded: d = g, so only the momentum arithmetic acts
    grads = [torch.tensor([1.0]), torch.tensor([2.0])]
    dampened = nn.Parameter(torch.tensor([0.0]))
    nesterov = nn.Parameter(torch.tensor([0.0]))
    optimizer = LARS([{"params": [dampened], "dampening": 0.5}, {"params": [nesterov], "nesterov": True}], lr=1.0,
                     momentum=0.9, exclude_bias_n_norm=True)  # fmt: skip
    for grad in grads:
        dampened.grad, nesterov.grad = grad.clone(), grad.clone()
        optimizer.step()
    # dampened: buf 1, then 0.9 * 1 + 0.5 * 2 = 1.9, so p = -1 - 1.9.
    # nesterov: buf 1, step 1 + 0.9 * 1; then buf 0.9 * 1 + 2 = 2.9, step 2 + 0.9 * 2.9
    assert float(dampened.detach()) == pytest.approx(-2.9)
    assert float(optimizer.state[dampened]["momentum_buffer"]) == pytest.approx(1.9)
    assert float(nesterov.detach()) == pytest.approx(-(1.9 + 2.0 + 0.9 * 2.9))


class BiasedLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2)
        self.pos_embed = nn.Parameter(torch.ones(1, 2, 3))  # in the no-decay group although 3-D


def _grouped_step(exclude_bias_n_norm: bool) -> tuple[BiasedLinear, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = BiasedLinear()
    optimizer = LARS(param_groups(model), lr=1.0, eta=0.01, exclude_bias_n_norm=exclude_bias_n_norm)
    set_lr_and_weight_decay(optimizer, lr=0.2, weight_decay=0.05)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    grads = {name: torch.randn_like(p) for name, p in model.named_parameters()}
    for name, param in model.named_parameters():
        param.grad = grads[name].clone()
    optimizer.step()
    return model, before, grads


def _lars_update(param: torch.Tensor, grad: torch.Tensor, weight_decay: float, eta: float = 0.01) -> torch.Tensor:
    param_norm, grad_norm = float(param.norm()), float(grad.norm())
    return eta * param_norm / (grad_norm + weight_decay * param_norm + 1e-8) * (grad + weight_decay * param)


def test_no_decay_groups_are_excluded_like_1d_tensors() -> None:
    model, before, grads = _grouped_step(exclude_bias_n_norm=True)
    for name in ("linear.bias", "pos_embed"):  # apply_weight_decay=False: raw gradient, no decay
        torch.testing.assert_close(dict(model.named_parameters())[name].detach(), before[name] - 0.2 * grads[name])
    expected = before["linear.weight"] - 0.2 * _lars_update(before["linear.weight"], grads["linear.weight"], 0.05)
    torch.testing.assert_close(model.linear.weight.detach(), expected)


def test_without_exclusion_no_decay_groups_are_scaled_without_decay() -> None:
    model, before, grads = _grouped_step(exclude_bias_n_norm=False)
    for name in ("linear.bias", "pos_embed"):  # the schedule set weight decay 0 for the no-decay group
        expected = before[name] - 0.2 * _lars_update(before[name], grads[name], 0.0)
        torch.testing.assert_close(dict(model.named_parameters())[name].detach(), expected)
    expected = before["linear.weight"] - 0.2 * _lars_update(before["linear.weight"], grads["linear.weight"], 0.05)
    torch.testing.assert_close(model.linear.weight.detach(), expected)


def test_bad_arguments_raise() -> None:
    params = [nn.Parameter(torch.ones(2, 2))]
    with pytest.raises(ValueError, match="LARS param group 0: lr must be >= 0, got -0.1"):
        LARS(params, lr=-0.1)
    with pytest.raises(ValueError, match="LARS param group 0: weight_decay must be >= 0, got -1"):
        LARS(params, lr=0.1, weight_decay=-1)
    with pytest.raises(ValueError, match="LARS param group 0: eta must be > 0, got 0.0"):
        LARS(params, lr=0.1, eta=0.0)
    with pytest.raises(ValueError, match="LARS param group 0: momentum must be >= 0, got nan"):
        LARS(params, lr=0.1, momentum=math.nan)
    with pytest.raises(ValueError, match="group 0: nesterov needs momentum > 0 and dampening 0, got 0.9 and 0.1"):
        LARS(params, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True)
    groups = [{"params": params}, {"params": [nn.Parameter(torch.ones(2))], "nesterov": True}]
    with pytest.raises(ValueError, match="group 1: nesterov needs momentum > 0 and dampening 0, got 0.0 and 0.0"):
        LARS(groups, lr=0.1)

"""EWC (losses/ewc.py): the penalty formula and its gradient by hand, zero at the anchor, the
empirical Fisher of linear models by hand (per-batch gradients), trainable parameters only."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pretrainlab.losses.ewc import diagonal_fisher, ewc_penalty, parameter_snapshot


class TwoScalars(nn.Module):
    def __init__(self, a: float, b: float) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a, dtype=torch.float64))
        self.b = nn.Parameter(torch.tensor(b, dtype=torch.float64))


def linear_model(weight: list[float], bias: float) -> nn.Linear:
    model = nn.Linear(len(weight), 1).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([weight]))
        model.bias.fill_(bias)
    return model


def half_squared_error(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    """Mean Gaussian negative log-likelihood (unit variance, up to a constant): mean ½ (y − t)²."""
    x, t = batch
    return 0.5 * ((model(x).squeeze(1) - t) ** 2).mean()


def as_batch(xs: list[list[float]], ts: list[float]) -> tuple[Tensor, Tensor]:
    return torch.tensor(xs, dtype=torch.float64), torch.tensor(ts, dtype=torch.float64)


def test_penalty_on_two_parameters_by_hand() -> None:
    model = TwoScalars(2.0, -1.0)
    anchor = {"a": torch.tensor(0.5, dtype=torch.float64), "b": torch.tensor(1.0, dtype=torch.float64)}
    fisher = {"a": torch.tensor(4.0, dtype=torch.float64), "b": torch.tensor(0.25, dtype=torch.float64)}
    penalty = ewc_penalty(model, fisher, anchor, lam=3.0)
    assert penalty.item() == pytest.approx(15.0, abs=1e-12)  # 3/2 · (4 · 1.5² + 0.25 · (−2)²) = 1.5 · 10
    penalty.backward()
    assert model.a.grad.item() == pytest.approx(18.0, abs=1e-12)  # λ F_a (a − a*) = 3 · 4 · 1.5
    assert model.b.grad.item() == pytest.approx(-1.5, abs=1e-12)  # 3 · 0.25 · (−2)


def test_penalty_is_exactly_zero_at_the_anchor_and_grows_away_from_it() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    anchor = parameter_snapshot(model)
    fisher = {name: torch.rand_like(value) + 0.1 for name, value in anchor.items()}
    penalty = ewc_penalty(model, fisher, anchor, lam=100.0)
    assert penalty.item() == 0.0
    penalty.backward()
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())
    with torch.no_grad():
        model[0].bias += 0.1
    expected = 50.0 * float((fisher["0.bias"] * 0.01).sum())
    assert ewc_penalty(model, fisher, anchor, lam=100.0).item() == pytest.approx(expected, rel=1e-5)


def test_fisher_of_a_linear_model_is_the_mean_squared_batch_gradient() -> None:
    model = linear_model([1.0, 2.0], 0.5)
    # batch 1: y = 1.5, t = 0 -> residual 1.5, gradient (w: (1.5, 0), c: 1.5)
    # batch 2: y = 2.5, t = 3 -> residual −0.5, gradient (w: (0, −0.5), c: −0.5)
    batches = [as_batch([[1.0, 0.0]], [0.0]), as_batch([[0.0, 1.0]], [3.0])]
    fisher = diagonal_fisher(model, batches, half_squared_error)
    assert set(fisher) == {"weight", "bias"}
    # weight: ((1.5² + 0²) / 2, (0² + 0.5²) / 2)
    torch.testing.assert_close(fisher["weight"], torch.tensor([[1.125, 0.125]], dtype=torch.float64))
    torch.testing.assert_close(fisher["bias"], torch.tensor([1.25], dtype=torch.float64))  # (2.25 + 0.25) / 2


def test_fisher_squares_the_gradient_of_the_batch_mean_not_of_each_sample() -> None:
    model = linear_model([1.0, 2.0], 0.5)
    both = as_batch([[1.0, 0.0], [0.0, 1.0]], [0.0, 3.0])  # mean gradient: w (0.75, −0.25), c 0.5
    fisher = diagonal_fisher(model, [both], half_squared_error)
    torch.testing.assert_close(fisher["weight"], torch.tensor([[0.5625, 0.0625]], dtype=torch.float64))
    torch.testing.assert_close(fisher["bias"], torch.tensor([0.25], dtype=torch.float64))


def test_fisher_of_a_softmax_classifier_by_hand() -> None:
    model = nn.Linear(1, 2).double()
    nn.init.zeros_(model.weight)
    nn.init.zeros_(model.bias)

    def cross_entropy(module: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, label = batch
        return F.cross_entropy(module(x), label)

    # logits 0 -> p = (½, ½); d CE / d logits = p − onehot(0) = (−½, ½); times x = 2 for the weights
    batch = (torch.tensor([[2.0]], dtype=torch.float64), torch.tensor([0]))
    fisher = diagonal_fisher(model, [batch, batch, batch], cross_entropy)
    torch.testing.assert_close(fisher["weight"], torch.tensor([[1.0], [1.0]], dtype=torch.float64))
    torch.testing.assert_close(fisher["bias"], torch.tensor([0.25, 0.25], dtype=torch.float64))


def test_only_trainable_parameters_are_weighed_and_grads_are_left_alone() -> None:
    model = nn.Sequential(linear_model([1.0, 2.0], 0.5), nn.Linear(5, 5).double())  # the second is never used
    model[0].weight.requires_grad_(False)
    model[0].bias.grad = torch.full_like(model[0].bias, 7.0)

    def loss_fn(module: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        return half_squared_error(module[0], batch)

    fisher = diagonal_fisher(model, [as_batch([[1.0, 0.0]], [0.0])], loss_fn)
    assert set(fisher) == {"0.bias", "1.weight", "1.bias"}
    torch.testing.assert_close(fisher["0.bias"], torch.tensor([2.25], dtype=torch.float64))
    assert not fisher["1.weight"].any() and not fisher["1.bias"].any()  # unreached: zero
    torch.testing.assert_close(model[0].bias.grad, torch.full_like(model[0].bias, 7.0))
    assert set(parameter_snapshot(model)) == {"0.bias", "1.weight", "1.bias"}


def test_bad_input_raises() -> None:
    model = linear_model([1.0, 2.0], 0.5)
    with pytest.raises(ValueError, match="no batches"):
        diagonal_fisher(model, [], half_squared_error)
    with pytest.raises(ValueError, match="scalar"):
        diagonal_fisher(model, [as_batch([[1.0, 0.0]], [0.0])], lambda m, b: m(b[0]).squeeze(1))
    with pytest.raises(ValueError, match="requires_grad"):
        diagonal_fisher(model.requires_grad_(False), [as_batch([[1.0, 0.0]], [0.0])], half_squared_error)
    model.requires_grad_(True)
    anchor = parameter_snapshot(model)
    fisher = {name: torch.ones_like(value) for name, value in anchor.items()}
    with pytest.raises(ValueError, match="lam"):
        ewc_penalty(model, fisher, anchor, lam=-1.0)
    with pytest.raises(ValueError, match="'bias'"):
        ewc_penalty(model, fisher, {"weight": anchor["weight"]}, lam=1.0)
    with pytest.raises(ValueError, match="'head.bias' is not a parameter"):
        ewc_penalty(model, {"head.bias": torch.ones(1)}, anchor, lam=1.0)
    with pytest.raises(ValueError, match="'weight'"):
        ewc_penalty(model, {"weight": torch.ones(2)}, anchor, lam=1.0)
    with pytest.raises(ValueError, match="empty"):
        ewc_penalty(model, {}, anchor, lam=1.0)

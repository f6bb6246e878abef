"""Elastic weight consolidation (EWC): a quadratic pull towards weights that mattered before.

Kirkpatrick et al. 2017, "Overcoming catastrophic forgetting in neural networks" (PNAS,
arXiv:1612.00796), Eq. 3: after learning task A (here: the source domain, or the domains seen
so far) at θ*, training on B minimises L_B(θ) + Σ_i λ/2 · F_i (θ_i − θ*_i)², where F is the
diagonal of the Fisher information at θ*.

`diagonal_fisher` estimates F as the *empirical* Fisher over mini-batches: for each batch b the
gradient g_b of the batch's mean negative log-likelihood (the CE against its labels, or against
pseudo labels) is taken, and F_i = mean_b g_{b,i}². The gradients are per batch, not per sample:
with batches of size 1 this is the usual per-sample estimate; with batch size N the squared mean
gradient is smaller (≈ 1/N of it for uncorrelated samples), which only rescales λ. The model is
run in the mode it is in (put it in eval mode for fixed BatchNorm statistics and no dropout).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor, nn

Batch = TypeVar("Batch")


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters of `model` with `requires_grad`, by name."""
    return {name: param for name, param in model.named_parameters() if param.requires_grad}


def parameter_snapshot(model: nn.Module) -> dict[str, Tensor]:
    """Detached copies of the trainable parameters of `model`: the anchor θ* of `ewc_penalty`."""
    return {name: param.detach().clone() for name, param in trainable_parameters(model).items()}


def diagonal_fisher(
    model: nn.Module, batches: Iterable[Batch], loss_fn: Callable[[nn.Module, Batch], Tensor]
) -> dict[str, Tensor]:
    """Empirical diagonal Fisher: the mean over batches of the squared per-batch gradient.

    Args:
        model: the model at θ*; only its parameters with `requires_grad` are included.
        batches: the batches to average over (at least one).
        loss_fn: (model, batch) -> scalar negative log-likelihood of the batch (e.g. the mean CE).

    Returns:
        {name: F} with F of the parameter's shape, detached; 0 for a parameter the loss does not
        reach. The parameters' `.grad` are left untouched.
    """
    params = trainable_parameters(model)
    if not params:
        raise ValueError(f"{type(model).__name__} has no parameter with requires_grad: nothing to weigh")
    fisher = {name: torch.zeros_like(param) for name, param in params.items()}
    num_batches = 0
    for batch in batches:
        loss = loss_fn(model, batch)
        if loss.ndim != 0:
            raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}")
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        for name, grad in zip(params, grads):
            if grad is not None:
                fisher[name] += grad.detach() ** 2
        num_batches += 1
    if num_batches == 0:
        raise ValueError("diagonal_fisher got no batches")
    return {name: value / num_batches for name, value in fisher.items()}


def ewc_penalty(model: nn.Module, fisher: Mapping[str, Tensor], anchor: Mapping[str, Tensor], lam: float) -> Tensor:
    """λ/2 · Σ_i F_i (θ_i − θ*_i)² over the parameters named in `fisher` (Kirkpatrick et al. 2017, Eq. 3).

    Args:
        model: the model being trained (θ); every name of `fisher` must be one of its parameters.
        fisher: {name: F_i} from `diagonal_fisher`, each of the parameter's shape, ≥ 0.
        anchor: {name: θ*_i} for every name of `fisher` (e.g. `parameter_snapshot` at θ*).
        lam: λ ≥ 0.

    Returns:
        Scalar, differentiable in the model's parameters; exactly 0 at θ = θ*.
    """
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    if not fisher:
        raise ValueError("fisher is empty: no parameter to anchor")
    params = dict(model.named_parameters())
    terms = []
    for name, weight in fisher.items():
        if name not in params:
            raise ValueError(f"fisher entry '{name}' is not a parameter of {type(model).__name__}")
        if name not in anchor:
            raise ValueError(f"anchor has no entry '{name}' (it has {len(anchor)} entries)")
        param, reference = params[name], anchor[name]
        if weight.shape != param.shape or reference.shape != param.shape:
            raise ValueError(f"'{name}': parameter {tuple(param.shape)}, fisher {tuple(weight.shape)} and anchor "
                             f"{tuple(reference.shape)} must have one shape")  # fmt: skip
        terms.append((weight * (param - reference) ** 2).sum())
    return 0.5 * lam * torch.stack(terms).sum()


@dataclass
class EWCAnchor:
    """θ* and F of a model, with λ: what a method adds as `ewc_penalty` every step."""

    fisher: dict[str, Tensor]
    anchor: dict[str, Tensor]
    weight: float  # λ

    def penalty(self, model: nn.Module) -> Tensor:
        """`ewc_penalty(model, fisher, anchor, weight)`, with F and θ* moved to the model's device on first use."""
        device = next(model.parameters()).device
        if next(iter(self.fisher.values())).device != device:
            self.fisher = {name: value.to(device) for name, value in self.fisher.items()}
            self.anchor = {name: value.to(device) for name, value in self.anchor.items()}
        return ewc_penalty(model, self.fisher, self.anchor, self.weight)

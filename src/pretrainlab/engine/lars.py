"""LARS: layer-wise adaptive rate scaling (You et al. 2017, "Large Batch Training of
Convolutional Networks", arXiv:1708.03888), with solo-learn's semantics
(github.com/vturrisi/solo-learn `solo/utils/lars.py` at e384184, itself from Lightning Bolts),
as used for SimCLR / SupCon pretraining.

For each parameter p with gradient g, norms over the whole tensor taken before the update:
    if scaled:  t = eta * ||p|| / (||g|| + wd * ||p|| + eps)
                t = min(t / lr, 1)              with clip_lr
                d = (g + wd * p) * t
    else:       d = g                           (no scaling and no weight decay)
    buf = d at the first step, then buf = momentum * buf + (1 - dampening) * d
    d = buf, or d + momentum * buf with nesterov   (when momentum != 0)
    p = p - lr * d
A parameter is scaled unless it is excluded or ||p|| = 0 or ||g|| = 0 (e.g. a bias
initialised to zero gets the raw gradient). With `exclude_bias_n_norm` every 1-D tensor
(bias, norm weight / bias) is excluded, whatever its name.

Deliberate differences from solo-learn's LARS, all for the param groups of
`engine/optim.py` (the reference uses one group; with one group and no
`apply_weight_decay` key the numbers are the same):
* A group with `apply_weight_decay=False` (the builder's no-decay group: 1-D tensors and
  position / class / register / mask tokens) is excluded like a 1-D tensor when
  `exclude_bias_n_norm` is set, so the tokens get the raw gradient where solo-learn scales
  them. Without `exclude_bias_n_norm` such a group is scaled, with its own weight decay
  (0 under `set_lr_and_weight_decay`), where solo-learn would decay it.
* `weight_decay` and `lr` are read from each group at every step (the per-iteration
  schedules set them), so clip_lr clips against the group's current lr. At lr = 0 the
  clipped ratio is 1 (t / 0 = inf), as in solo-learn.
* The zero-norm test is a `torch.where`, not a Python `if` on a tensor, so a step makes no
  device-to-host synchronisation; the values are the same.
* solo-learn's class docstring says parameters with weight decay 0 are excluded from the
  scaling; its code does not do this, and neither does this class (wd = 0 is scaled).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor


class LARS(torch.optim.Optimizer):
    """SGD with momentum and LARS trust-ratio scaling (see the module docstring).

    Args:
        params: parameters or param groups; a group may carry `apply_weight_decay`.
        lr: learning rate (>= 0).
        momentum: momentum factor (>= 0); 0 turns momentum off.
        dampening: dampening of the momentum (not applied at the first step).
        weight_decay: L2 penalty added to the gradient inside the LARS branch (>= 0).
        nesterov: Nesterov momentum (needs momentum > 0 and dampening 0).
        eta: trust coefficient (> 0).
        eps: added to the trust-ratio denominator (>= 0).
        clip_lr: clip the trust ratio to min(t / lr, 1).
        exclude_bias_n_norm: give 1-D tensors (and `apply_weight_decay=False` groups) the raw gradient.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        eta: float = 1e-3,
        eps: float = 1e-8,
        clip_lr: bool = False,
        exclude_bias_n_norm: bool = False,
    ) -> None:
        defaults = {
            "lr": lr, "momentum": momentum, "dampening": dampening, "weight_decay": weight_decay,
            "nesterov": nesterov, "eta": eta, "eps": eps, "clip_lr": clip_lr,
            "exclude_bias_n_norm": exclude_bias_n_norm,
        }  # fmt: skip
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group (its missing options from the constructor's); raise ValueError on an invalid option."""
        group, index = {**self.defaults, **param_group}, len(self.param_groups)
        for name in ("lr", "momentum", "weight_decay", "eps"):
            if not group[name] >= 0.0:  # also catches NaN
                raise ValueError(f"LARS param group {index}: {name} must be >= 0, got {group[name]}")
        if not group["eta"] > 0.0:
            raise ValueError(f"LARS param group {index}: eta must be > 0, got {group['eta']}")
        if group["nesterov"] and (group["momentum"] <= 0.0 or group["dampening"] != 0.0):
            raise ValueError(f"LARS param group {index}: nesterov needs momentum > 0 and dampening 0, "
                             f"got {group['momentum']} and {group['dampening']}")  # fmt: skip
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One update of every parameter that has a gradient; returns the closure's loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            is_excluded_group = group["exclude_bias_n_norm"] and not group.get("apply_weight_decay", True)
            for param in group["params"]:
                if param.grad is None:
                    continue
                is_excluded = is_excluded_group or (group["exclude_bias_n_norm"] and param.ndim == 1)
                update = param.grad if is_excluded else self._scaled_gradient(param, group)
                param.add_(self._momentum_update(param, update, group), alpha=-group["lr"])
        return loss

    @staticmethod
    def _scaled_gradient(param: Tensor, group: dict[str, Any]) -> Tensor:
        """(g + wd * p) * trust ratio, or g where ||p|| or ||g|| is zero."""
        grad, weight_decay = param.grad, group["weight_decay"]
        param_norm, grad_norm = torch.linalg.vector_norm(param), torch.linalg.vector_norm(grad)  # () each
        trust = param_norm / (grad_norm + param_norm * weight_decay + group["eps"]) * group["eta"]
        if group["clip_lr"]:
            trust = torch.clamp(trust / group["lr"], max=1.0)
        is_scaled = (param_norm != 0) & (grad_norm != 0)  # () bool
        decayed = torch.where(is_scaled, grad.add(param, alpha=weight_decay), grad)
        return decayed.mul_(torch.where(is_scaled, trust, 1.0))

    def _momentum_update(self, param: Tensor, update: Tensor, group: dict[str, Any]) -> Tensor:
        """The step direction after momentum (`update` itself when momentum is 0)."""
        momentum = group["momentum"]
        if momentum == 0:
            return update
        state = self.state[param]
        if "momentum_buffer" not in state:
            buffer = state["momentum_buffer"] = update.detach().clone()
        else:
            buffer = state["momentum_buffer"].mul_(momentum).add_(update, alpha=1 - group["dampening"])
        return update.add(buffer, alpha=momentum) if group["nesterov"] else buffer

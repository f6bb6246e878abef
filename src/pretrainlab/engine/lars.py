"""LARS: layer-wise adaptive rate scaling (You et al. 2017, arXiv:1708.03888), as used by SimCLR / DINO.

Parameters in groups with `apply_weight_decay=False` (biases, norms) skip the
adaptation, following the DINO / BYOL practice.
"""

from __future__ import annotations

import torch


class LARS(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 0.0, momentum: float = 0.9, eta: float = 0.001) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "eta": eta, "weight_decay": 0.0})

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                update = param.grad
                if group.get("apply_weight_decay", True):
                    update = update.add(param, alpha=group["weight_decay"])
                    param_norm, update_norm = torch.norm(param), torch.norm(update)
                    trust = torch.where(
                        (param_norm > 0) & (update_norm > 0), group["eta"] * param_norm / update_norm, 1.0
                    )
                    update = update.mul(trust)
                state = self.state[param]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(param)
                buffer = state["momentum_buffer"].mul_(group["momentum"]).add_(update)
                param.add_(buffer, alpha=-group["lr"])
        return loss

"""Optimizer construction: one place decides what trains; no parameter is in two groups.

Biases, norm parameters (1-D) and position / class tokens get no weight decay, as in
DINO / timm. Each group carries `apply_weight_decay` so the per-iteration schedule
sets its decay.
"""

from __future__ import annotations

import torch
from torch import nn

from pretrainlab.config.schema import OptimConfig

NO_DECAY_NAMES = ("pos_embed", "cls_token", "reg_token", "mask_token")
FUSED_ADAMW_DEVICES = ("cpu", "cuda")


def param_groups(model: nn.Module) -> list[dict]:
    """Trainable parameters split into decay / no-decay groups (each parameter exactly once)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name.endswith(".bias") or any(key in name for key in NO_DECAY_NAMES):
            no_decay.append(param)
        else:
            decay.append(param)
    groups = [{"params": decay, "apply_weight_decay": True}, {"params": no_decay, "apply_weight_decay": False}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.Optimizer:
    groups = param_groups(model)
    if not groups:
        raise ValueError("no trainable parameters: everything is frozen")
    if config.name == "adamw":
        # The fused kernel makes one pass per parameter instead of torch's default for-loop of
        # ~10 elementwise ops (the same update up to float rounding). Measured on CPU: 9x faster
        # on one 44 M-element tensor, 3x on ViT-S/16 + DINO head under load (benchmarks/README.md).
        # None (not False) elsewhere keeps torch's own default, e.g. foreach on other accelerators.
        return torch.optim.AdamW(groups, lr=config.lr, weight_decay=0.0, fused=_can_fuse(groups) or None)
    if config.name == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=0.0)
    from pretrainlab.engine.lars import LARS

    return LARS(groups, lr=config.lr, momentum=config.momentum)


def _can_fuse(groups: list[dict]) -> bool:
    """True when every parameter is a floating-point tensor on a device with a fused AdamW kernel."""
    params = [p for group in groups for p in group["params"]]
    return all(p.is_floating_point() and p.device.type in FUSED_ADAMW_DEVICES for p in params)


def set_lr_and_weight_decay(optimizer: torch.optim.Optimizer, lr: float, weight_decay: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
        group["weight_decay"] = weight_decay if group["apply_weight_decay"] else 0.0


@torch.no_grad()
def clip_gradients_per_parameter(model: nn.Module, max_norm: float) -> None:
    """DINO's clipping: each parameter's gradient norm is clipped to `max_norm` separately."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    norms = torch._foreach_norm(grads)
    scales = [torch.clamp(max_norm / (n + 1e-6), max=1.0) for n in norms]
    torch._foreach_mul_(grads, scales)

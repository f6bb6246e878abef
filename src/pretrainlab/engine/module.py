"""Lightning glue: one training step of any Method with precomputed schedules.

Manual optimisation keeps the whole step visible in one place: set lr / weight decay
from the schedules, sum the `loss*` entries (weighted by the method; logged as
`train/objective`), backward, per-parameter clipping, drop
the gradients of frozen parameters, optimizer step, then the method's post-step work
(EMA teacher).
"""

from __future__ import annotations

import random

import lightning as L
import numpy as np
import torch
from torch import Tensor

from pretrainlab.config.schema import OptimConfig
from pretrainlab.engine.optim import (
    build_optimizer,
    clip_gradients_per_parameter,
    set_lr_and_weight_decay,
)
from pretrainlab.engine.schedules import Schedules
from pretrainlab.methods.base import Method


class PretrainModule(L.LightningModule):
    def __init__(
        self, method: Method, optim: OptimConfig, schedules: Schedules, *, channels_last: bool = False
    ) -> None:
        super().__init__()
        self.channels_last = channels_last
        self.method = method.to(memory_format=torch.channels_last) if channels_last else method
        self.optim_config = optim
        self.schedules = schedules
        self.automatic_optimization = False

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return build_optimizer(self.method, self.optim_config)

    def training_step(self, batch: tuple[list[Tensor], Tensor], batch_idx: int) -> Tensor:
        views, labels = batch
        if self.channels_last:
            views = [view.contiguous(memory_format=torch.channels_last) for view in views]
        step = self.schedules.at(self.global_step)
        optimizer = self.optimizers()
        set_lr_and_weight_decay(optimizer.optimizer, step.lr, step.weight_decay)

        outputs = self.method.training_step(views, step, labels)
        loss = sum(value for key, value in outputs.items() if key.startswith("loss"))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at iteration {step.iteration}; stopping")

        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if self.optim_config.clip_grad is not None:
            clip_gradients_per_parameter(self.method, self.optim_config.clip_grad)
        for param in self.method.frozen_parameters(step):
            param.grad = None
        optimizer.step()
        self.method.after_optimizer_step(step)

        logged = {key: value.detach().float() for key, value in outputs.items()}
        logged.update(objective=loss.detach(), lr=torch.tensor(step.lr), weight_decay=torch.tensor(step.weight_decay))
        self.log_dict({f"train/{k}": v for k, v in logged.items()}, prog_bar=False, on_step=True)
        self.log("loss", logged["objective"], prog_bar=True, on_step=True, logger=False)
        return loss.detach()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """RNG states travel with the checkpoint so a resumed run continues the same random streams."""
        name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
        checkpoint["rng_states"] = {  # plain types and tensors only, so `weights_only` loading works
            "torch": torch.get_rng_state(),
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gaussian],
            "python": random.getstate(),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        states = checkpoint.get("rng_states")
        if states is not None:
            torch.set_rng_state(states["torch"])
            name, keys, position, has_gauss, cached_gaussian = states["numpy"]
            np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
            random.setstate(states["python"])

"""Lightning glue: one training step of any Method with precomputed schedules.

Manual optimisation keeps the whole step visible in one place: set lr / weight decay
from the schedules, sum the `loss*` entries (weighted by the method; logged as
`train/objective`), backward, per-parameter clipping, drop the gradients of frozen
parameters, optimizer step, then the method's post-step work (EMA teacher). Every
schedule value of the step is logged too (`train/lr`, `train/teacher_momentum`, ...).
A step whose outputs hold no `loss*` entry is inference only: its outputs are logged and
nothing else happens (W2's detector policy trains only after a detected domain change).

Schedules are built when training starts, from the number of batches *this process*
runs per epoch and the number of processes (`make_schedules(steps_per_epoch, world_size)`),
so they end with the run on any number of devices.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor

from pretrainlab.engine.optim import (
    OptimConfig,
    build_optimizer,
    clip_gradients_per_parameter,
    set_lr_and_weight_decay,
)
from pretrainlab.engine.schedules import Schedules
from pretrainlab.methods.base import Method

MakeSchedules = Callable[[int, int], Schedules]  # (steps per epoch per process, world size) -> Schedules


def to_channels_last(batch: Any) -> Any:
    """Every 4-D tensor of a (nested list / tuple) batch in channels-last memory format."""
    if isinstance(batch, Tensor):
        return batch.contiguous(memory_format=torch.channels_last) if batch.ndim == 4 else batch
    if isinstance(batch, list | tuple):
        return type(batch)(to_channels_last(item) for item in batch)
    return batch


class EngineModule(L.LightningModule):
    def __init__(
        self, method: Method, optim: OptimConfig, make_schedules: MakeSchedules, *, channels_last: bool = False
    ) -> None:
        super().__init__()
        self.channels_last = channels_last
        self.method = method.to(memory_format=torch.channels_last) if channels_last else method
        self.optim_config = optim
        self.make_schedules = make_schedules
        self.schedules: Schedules | None = None
        self.automatic_optimization = False

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return build_optimizer(self.method, self.optim_config)

    def on_train_start(self) -> None:
        self.schedules = self.make_schedules(int(self.trainer.num_training_batches), self.trainer.world_size)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        if self.channels_last:
            batch = to_channels_last(batch)
        step = self.schedules.at(self.global_step)
        optimizer = self.optimizers()
        set_lr_and_weight_decay(optimizer.optimizer, step.lr, step.weight_decay)

        outputs = self.method.training_step(batch, step)
        losses = [value for key, value in outputs.items() if key.startswith("loss")]
        if not losses:  # an inference-only step (W2's detector policy): no backward, no update, no EMA
            optimizer.zero_grad(set_to_none=True)
            optimizer.step()  # skips every parameter (no gradient) but counts the step, so iterations stay aligned
            self.log_dict({f"train/{k}": v.detach().float() for k, v in outputs.items()}, prog_bar=False, on_step=True)
            return None
        loss = sum(losses)
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
        scheduled = {"lr": step.lr, "weight_decay": step.weight_decay, **step.values}
        logged.update(objective=loss.detach(), **{k: torch.tensor(v) for k, v in scheduled.items()})
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

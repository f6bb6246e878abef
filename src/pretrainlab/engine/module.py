"""Lightning glue: one training step of any Method with precomputed schedules.

Manual optimisation keeps the whole step visible in one place: set lr / weight decay
from the schedules, sum the `loss*` entries (weighted by the method; logged as
`train/objective`), backward, per-parameter clipping, drop the gradients of frozen
parameters, optimizer step, then the method's post-step work (EMA teacher). Every
schedule value of the step is logged too (`train/lr`, `train/teacher_momentum`, ...).
A step whose outputs hold no `loss*` entry is inference only: its outputs are logged and
nothing else happens (W2's detector policy trains only after a detected domain change).

A NaN / Inf objective stops the run with `NonFiniteLossError`, whose one-line message names
the step, every `loss*` term and the checkpoint a resume would start from. With
`skip_nonfinite_steps=N`, up to N such steps are skipped instead, each with a warning: no
backward, no optimizer update, no post-step work, and the method's buffers (BatchNorm
statistics, DINO's center) are put back as they were before the step; the step still counts,
like an inference-only one, so iterations stay aligned with the schedules. The count is
logged as `train/skipped_nonfinite` and kept in checkpoints. All processes take the same
decision (a loss that is not finite on one of them counts for all).

Schedules are built when training starts, from the number of batches *this process*
runs per epoch and the number of processes (`make_schedules(steps_per_epoch, world_size)`),
so they end with the run on any number of devices.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor

from pretrainlab.distributed import all_reduce_sum
from pretrainlab.engine.checkpointing import LastCheckpoint
from pretrainlab.engine.optim import (
    OptimConfig,
    build_optimizer,
    clip_gradients_per_parameter,
    set_lr_and_weight_decay,
)
from pretrainlab.engine.schedules import Schedules, StepValues
from pretrainlab.methods.base import Method

log = logging.getLogger(__name__)

MakeSchedules = Callable[[int, int], Schedules]  # (steps per epoch per process, world size) -> Schedules


class NonFiniteLossError(FloatingPointError):
    """A training step's objective is NaN or Inf and no skip is left; the message says where and what."""


def to_channels_last(batch: Any) -> Any:
    """Every 4-D tensor of a (nested list / tuple) batch in channels-last memory format."""
    if isinstance(batch, Tensor):
        return batch.contiguous(memory_format=torch.channels_last) if batch.ndim == 4 else batch
    if isinstance(batch, list | tuple):
        return type(batch)(to_channels_last(item) for item in batch)
    return batch


def describe_nonfinite(step: StepValues, terms: dict[str, Tensor], *, is_local: bool) -> str:
    """`non-finite loss at step 12 (epoch 2): loss=nan, loss_koleo=0.5313`: this process's terms, and
    whether the objective was not finite here or on another process."""
    values = ", ".join(f"{key}={value.item():.4g}" for key, value in terms.items())
    where = "" if is_local else " on another process; here"
    return f"non-finite loss at step {step.iteration} (epoch {step.epoch}){where}: {values}"


class EngineModule(L.LightningModule):
    def __init__(
        self,
        method: Method,
        optim: OptimConfig,
        make_schedules: MakeSchedules,
        *,
        channels_last: bool = False,
        skip_nonfinite_steps: int = 0,
        last_checkpoint: LastCheckpoint | None = None,
    ) -> None:
        """`skip_nonfinite_steps`: how many steps with a NaN / Inf objective are skipped before one stops
        the run; `last_checkpoint`: the callback writing the run's checkpoint, named in that message."""
        super().__init__()
        self.channels_last = channels_last
        self.method = method.to(memory_format=torch.channels_last) if channels_last else method
        self.optim_config = optim
        self.make_schedules = make_schedules
        self.schedules: Schedules | None = None
        self.skip_nonfinite_steps = skip_nonfinite_steps
        self.skipped_nonfinite = 0
        self.last_checkpoint = last_checkpoint
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

        may_skip = self.skipped_nonfinite < self.skip_nonfinite_steps
        buffers_before = [buffer.clone() for buffer in self.method.buffers()] if may_skip else []
        outputs = self.method.training_step(batch, step)
        terms = {key: value for key, value in outputs.items() if key.startswith("loss")}
        if not terms:  # an inference-only step (W2's detector policy): no backward, no update, no EMA
            self.count_step_without_update()
            self.log_dict({f"train/{k}": v.detach().float() for k, v in outputs.items()}, prog_bar=False, on_step=True)
            return None
        loss = sum(terms.values())
        is_finite_here = bool(torch.isfinite(loss))
        if not self.is_finite_everywhere(is_finite_here, loss.device):
            self.skip_or_stop(step, terms, is_local=not is_finite_here, buffers_before=buffers_before)
            return None

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
        if self.skip_nonfinite_steps:
            logged["skipped_nonfinite"] = torch.tensor(float(self.skipped_nonfinite))
        self.log_dict({f"train/{k}": v for k, v in logged.items()}, prog_bar=False, on_step=True)
        self.log("loss", logged["objective"], prog_bar=True, on_step=True, logger=False)
        return loss.detach()

    def count_step_without_update(self) -> None:
        """Step the optimizer with no gradient: it skips every parameter but counts the step, so iterations
        stay aligned with the schedules and the global step."""
        optimizer = self.optimizers()
        optimizer.zero_grad(set_to_none=True)
        optimizer.step()

    @staticmethod
    def is_finite_everywhere(is_finite_here: bool, device: torch.device) -> bool:
        """Whether the objective is finite on every process (one small all-reduce when distributed)."""
        return all_reduce_sum(torch.tensor([float(not is_finite_here)], device=device)).item() == 0

    def skip_or_stop(
        self, step: StepValues, terms: dict[str, Tensor], *, is_local: bool, buffers_before: list[Tensor]
    ) -> None:
        """Skip a step whose objective is not finite (see the module docstring), or raise
        `NonFiniteLossError` when `skip_nonfinite_steps` are skipped already."""
        description = describe_nonfinite(step, terms, is_local=is_local)
        if self.skipped_nonfinite >= self.skip_nonfinite_steps:
            checkpoint = self.last_checkpoint.describe() if self.last_checkpoint else "none (this run writes none)"
            skipped = ""
            if self.skip_nonfinite_steps:
                skipped = (f"; {self.skipped_nonfinite} earlier non-finite steps were skipped "
                           f"(engine.skip_nonfinite_steps={self.skip_nonfinite_steps})")  # fmt: skip
            raise NonFiniteLossError(f"{description}; last good checkpoint: {checkpoint}{skipped}; stopping")
        with torch.no_grad():
            for buffer, before in zip(self.method.buffers(), buffers_before, strict=True):
                buffer.copy_(before)
        self.skipped_nonfinite += 1
        log.warning("%s; skipped (%d of engine.skip_nonfinite_steps=%d)", description, self.skipped_nonfinite,
                    self.skip_nonfinite_steps)  # fmt: skip
        self.count_step_without_update()
        self.log("train/skipped_nonfinite", float(self.skipped_nonfinite), prog_bar=False, on_step=True)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """RNG states (torch CPU, the current GPU when CUDA is in use, numpy, Python) and the count of skipped
        non-finite steps travel with the checkpoint, so a resumed run continues the same random streams (dropout,
        drop-path, masks) and its skip budget."""
        name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
        checkpoint["rng_states"] = {  # plain types and tensors only, so `weights_only` loading works
            "torch": torch.get_rng_state(),
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gaussian],
            "python": random.getstate(),
            **({"cuda": torch.cuda.get_rng_state()} if torch.cuda.is_initialized() else {}),
        }
        checkpoint["skipped_nonfinite"] = self.skipped_nonfinite

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        states = checkpoint.get("rng_states")
        if states is not None:
            torch.set_rng_state(states["torch"])
            name, keys, position, has_gauss, cached_gaussian = states["numpy"]
            np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
            random.setstate(states["python"])
            if "cuda" in states and torch.cuda.is_available():
                torch.cuda.set_rng_state(states["cuda"])
        self.skipped_nonfinite = int(checkpoint.get("skipped_nonfinite", 0))

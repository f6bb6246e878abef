"""Checkpoint files of the engine: written atomically, read safely, at epoch ends and within epochs.

Writes go to a temporary file that is fsynced and renamed, so a run killed while saving
keeps its previous checkpoint intact. Reads (Lightning's resume included) use
`weights_only=True` through `run_dir.load_checkpoint`: a checkpoint with code in it is refused.

`LastCheckpoint` writes `last.ckpt` at every epoch end and, optionally, every N optimizer
steps or M minutes within an epoch. A mid-epoch checkpoint is written at the end of a
training step, where Lightning's own step checkpoints are written, so Lightning resumes its
loop counters after that step; the position in the epoch's batches travels with the loader
(`data.train_data.ResumableLoader`), the RNG states with the module (`engine.module`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from pretrainlab.data.train_data import ResumableLoader
from pretrainlab.distributed import all_reduce_sum
from pretrainlab.run_dir import MID_EPOCH, load_checkpoint, save_checkpoint


class SafeCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        save_checkpoint(checkpoint, Path(path))

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None) -> dict:
        return load_checkpoint(Path(path), map_location or "cpu")


# Lightning's `save_checkpoint(weights_only=...)` chooses what is *written*: with the flag off, the
# optimizer, loop and callback states go in too (what resuming needs). It has nothing to do with
# how checkpoints are *read* (always `weights_only=True`, above). Passing it explicitly also
# silences Lightning's "weights_only was not set" message at every epoch end.
SAVE_MODEL_WEIGHTS_ONLY = False


def saved_steps(path: Path) -> tuple[int, int]:
    """(G, L) of the checkpoint at `path`: its global step G (optimizer steps done) and the last metrics
    step L = G - 1 of the history a run resumed from it continues (later lines are dropped on resume).

    Steps count from 0, so G steps log lines 0 .. G - 1: Lightning logs a step's metrics after its
    `on_train_batch_end`, where a mid-epoch checkpoint is written, and an epoch-end checkpoint is
    written after the epoch-end callbacks, whose evaluations log at the epoch's last step G - 1 (the
    kNN callback). A line at step G is the next step's (a domain record, metrics), which the resumed run
    redoes.
    """
    checkpoint = load_checkpoint(path)
    step = int(checkpoint["global_step"])
    return step, step - 1


class LastCheckpoint(L.Callback):
    """Save `path` after every training epoch and, with `every_n_steps` / `every_minutes`, within epochs.

    Within an epoch, `path` is written after optimizer step G when G is a multiple of
    `every_n_steps`, or when `every_minutes` have passed since the last save (on any process:
    the processes agree, as every one of them takes part in a save). The last batch of an epoch
    is left to the epoch-end checkpoint that follows it. `saved_step` is the global step of the
    checkpoint in `path` (None before the first one), for messages about the last good state.
    """

    def __init__(
        self,
        path: Path,
        loader: ResumableLoader,
        *,
        every_n_steps: int | None = None,
        every_minutes: float | None = None,
        saved_step: int | None = None,
    ) -> None:
        self.path = path
        self.loader = loader
        self.every_n_steps = every_n_steps
        self.every_minutes = every_minutes
        self.saved_step = saved_step
        self._is_mid_epoch = False
        self._last_save = time.monotonic()

    def describe(self) -> str:
        """The checkpoint a resume would start from, for messages: its path and step, or that there is none."""
        if self.saved_step is None:
            return f"no checkpoint yet ({self.path} is not written)"
        return f"{self.path} (step {self.saved_step})"

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_save = time.monotonic()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx + 1 >= trainer.num_training_batches or not self.is_due(trainer.global_step):
            return
        position = (trainer.current_epoch, batch_idx + 1)
        if self.loader.position != position:
            raise RuntimeError(
                f"the loader handed out {self.loader.position[1]} batches of epoch {self.loader.position[0]} "
                f"but training consumed {position[1]} of epoch {position[0]}: a mid-epoch checkpoint would not "
                "resume exactly (does this Lightning version prefetch batches?)"
            )
        self._save(trainer, is_mid_epoch=True)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer, is_mid_epoch=False)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[MID_EPOCH] = self._is_mid_epoch

    def is_due(self, global_step: int) -> bool:
        """Whether a checkpoint is due within the epoch after `global_step` optimizer steps (the same answer
        on every process: with `every_minutes`, one small all-reduce when distributed)."""
        if self.every_n_steps is not None and global_step % self.every_n_steps == 0:
            return True
        if self.every_minutes is None:
            return False
        is_late = time.monotonic() - self._last_save >= 60 * self.every_minutes
        return bool(all_reduce_sum(torch.tensor([float(is_late)])).item() > 0)  # any process's clock decides

    def _save(self, trainer: L.Trainer, *, is_mid_epoch: bool) -> None:
        self._is_mid_epoch = is_mid_epoch
        trainer.save_checkpoint(self.path, weights_only=SAVE_MODEL_WEIGHTS_ONLY)
        self.saved_step = trainer.global_step
        self._last_save = time.monotonic()

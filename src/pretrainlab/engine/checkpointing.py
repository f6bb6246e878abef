"""Checkpoint files of the engine: written atomically, read safely.

Writes go to a temporary file that is fsynced and renamed, so a run killed while saving
keeps its previous checkpoint intact. Reads (Lightning's resume included) use
`weights_only=True` through `run_dir.load_checkpoint`: a checkpoint with code in it is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.plugins.io import TorchCheckpointIO

from pretrainlab.run_dir import load_checkpoint, save_checkpoint


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


class LastCheckpoint(L.Callback):
    """Save `path` after every training epoch (Lightning resumes exactly from epoch ends)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.save_checkpoint(self.path, weights_only=SAVE_MODEL_WEIGHTS_ONLY)

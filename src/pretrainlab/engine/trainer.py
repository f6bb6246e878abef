"""The engine: train any Method on its TrainData with Lightning, resumably.

`fit` wraps the method in `EngineModule`, its data in a DataLoader whose sampler shards
across processes, and runs a Lightning Trainer with the configured devices / nodes /
strategy / precision, loggers (JSONL, CSV, TensorBoard), a progress bar and an atomic
epoch-end checkpoint. A checkpoint that exists is resumed from (read with
`weights_only=True`). Only rank 0 writes files; every rank runs the same calls.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from pydantic import Field, field_validator
from torch.utils.data import DataLoader

from pretrainlab.config.component import Strict
from pretrainlab.data.train_data import TrainData
from pretrainlab.engine.checkpointing import LastCheckpoint, SafeCheckpointIO
from pretrainlab.engine.jsonl_logger import JsonlLogger
from pretrainlab.engine.module import EngineModule, MakeSchedules
from pretrainlab.engine.optim import OptimConfig
from pretrainlab.methods.base import Method
from pretrainlab.run_dir import load_checkpoint

log = logging.getLogger(__name__)


class EngineConfig(Strict):
    """How training runs: epochs, precision, devices and processes, threads, logging."""

    max_epochs: int = Field(10, ge=1)
    precision: Literal["32", "bf16-mixed", "16-mixed"] = "bf16-mixed"
    accelerator: Literal["cpu", "gpu", "auto"] = "auto"
    devices: int | str = 1
    num_nodes: int = Field(1, ge=1)
    strategy: Literal["auto", "ddp", "fsdp"] = "auto"
    num_threads: int | None = Field(None, ge=1, description="torch intra-op threads; null = torch default")
    channels_last: bool = Field(False, description="NHWC memory format (faster convolutions on CPU)")
    log_every_n_steps: int = Field(10, ge=1)
    progress_bar: bool = True
    limit_train_batches: int | float | None = Field(None, description="for smoke tests")

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value  # YAML reads `precision: 32` as an int


def fit(
    method: Method,
    data: TrainData,
    *,
    optim: OptimConfig,
    make_schedules: MakeSchedules,
    engine: EngineConfig,
    max_epochs: int,
    metrics_path: Path,
    logs_dir: Path,
    checkpoint: Path | None,
    callbacks: Sequence[L.Callback] = (),
    channels_last: bool | None = None,
) -> L.Trainer:
    """Train `method` on `data` until epoch `max_epochs`, resuming from `checkpoint` when it exists.

    Args:
        make_schedules: (batches per epoch of this process, world size) -> Schedules.
        metrics_path: JSONL file the training metrics are appended to (truncated past the checkpoint on resume).
        logs_dir: CSV and TensorBoard logs.
        checkpoint: written at every epoch end; None = no checkpoint.
        channels_last: override `engine.channels_last`.
    """
    if engine.num_threads is not None:
        torch.set_num_threads(engine.num_threads)
    if len(data.dataset) < data.batch_size:
        raise ValueError(
            f"the batch size {data.batch_size} is larger than the training set ({len(data.dataset)} samples"
            f"{f' in {data.description}' if data.description else ''})"
        )
    loader = DataLoader(
        data.dataset,
        batch_size=data.batch_size,
        sampler=data.sampler,
        num_workers=data.num_workers,
        collate_fn=data.collate,
        drop_last=data.drop_last,
        persistent_workers=data.num_workers > 0,
    )
    resume_from = checkpoint if checkpoint is not None and checkpoint.is_file() else None
    resume_step = int(load_checkpoint(resume_from)["global_step"]) if resume_from is not None else 0
    all_callbacks: list[L.Callback] = [*([LastCheckpoint(checkpoint)] if checkpoint is not None else []), *callbacks]
    if engine.progress_bar:
        all_callbacks.append(RichProgressBar(refresh_rate=5, leave=True))
    trainer = L.Trainer(
        default_root_dir=logs_dir,
        max_epochs=max_epochs,
        accelerator=engine.accelerator,
        devices=engine.devices,
        num_nodes=engine.num_nodes,
        strategy=engine.strategy,
        precision=engine.precision,
        logger=[
            JsonlLogger(metrics_path, resume_step=resume_step),
            CSVLogger(logs_dir, name="csv", version=""),
            TensorBoardLogger(logs_dir, name="tensorboard", version=""),
        ],
        callbacks=all_callbacks,
        plugins=[SafeCheckpointIO()],
        enable_checkpointing=False,
        enable_progress_bar=engine.progress_bar,
        enable_model_summary=False,
        log_every_n_steps=engine.log_every_n_steps,
        limit_train_batches=engine.limit_train_batches,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # our samplers shard themselves (data/train_data.py)
        deterministic=False,
    )
    use_channels_last = engine.channels_last if channels_last is None else channels_last
    method.train()  # Lightning keeps each module's mode: the method's own `train` decides (frozen parts stay eval)
    module = EngineModule(method, optim, make_schedules, channels_last=use_channels_last)
    started = time.perf_counter()
    trainer.fit(module, train_dataloaders=loader, ckpt_path=resume_from)
    log.info("training to epoch %d took %.1f s", max_epochs, time.perf_counter() - started)
    return trainer

"""The engine: train any Method on its TrainData with Lightning, resumably.

`fit` wraps the method in `EngineModule`, its data in a `ResumableLoader` whose sampler
shards across processes, and runs a Lightning Trainer with the configured devices / nodes /
strategy / precision, loggers (JSONL, CSV, TensorBoard), a progress bar and an atomic
checkpoint at every epoch end (and, with `checkpoint_every_n_steps` / `checkpoint_every_minutes`,
within epochs). A checkpoint that exists is resumed from (read with `weights_only=True`),
also one written in the middle of an epoch: the run reads exactly the batches of that epoch
an uninterrupted run would have read after it, with the same random streams, and ends with
the same weights and metrics. Only rank 0 writes files; every rank runs the same calls.
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

from pretrainlab.config.component import Strict
from pretrainlab.data.train_data import ResumableLoader, TrainData
from pretrainlab.engine.checkpointing import LastCheckpoint, SafeCheckpointIO, saved_steps
from pretrainlab.engine.compile import compile_networks
from pretrainlab.engine.jsonl_logger import JsonlLogger
from pretrainlab.engine.module import EngineModule, MakeSchedules
from pretrainlab.engine.optim import OptimConfig
from pretrainlab.methods.base import Method
from pretrainlab.precision import device_type_of, resolve_precision

log = logging.getLogger(__name__)


class EngineConfig(Strict):
    """How training runs: epochs, precision, devices and processes, threads, logging, checkpoints,
    what a non-finite loss does."""

    max_epochs: int = Field(10, ge=1)
    precision: Literal["auto", "32", "bf16-mixed", "16-mixed"] = Field(
        "auto", description="auto = bf16-mixed where the device has bf16 kernels, else 32 (pretrainlab.precision)"
    )
    accelerator: Literal["cpu", "gpu", "auto"] = "auto"
    devices: int | str = 1
    num_nodes: int = Field(1, ge=1)
    strategy: Literal["auto", "ddp", "fsdp"] = "auto"
    num_threads: int | None = Field(None, ge=1, description="torch intra-op threads; null = torch default")
    channels_last: bool = Field(False, description="NHWC memory format (faster convolutions on CPU)")
    log_every_n_steps: int = Field(10, ge=1)
    progress_bar: bool = True
    limit_train_batches: int | float | None = Field(None, description="for smoke tests")
    checkpoint_every_n_steps: int | None = Field(
        None, ge=1, description="also write last.ckpt after every N-th optimizer step within an epoch"
    )
    checkpoint_every_minutes: float | None = Field(
        None, gt=0, description="also write last.ckpt within an epoch once this long has passed since the last one"
    )
    skip_nonfinite_steps: int = Field(
        0, ge=0, description="steps with a NaN / Inf loss skipped (with a warning) before the next one stops the run"
    )
    compile: bool = Field(
        False,
        description="torch.compile the method's networks in place before training (`compile_networks`); "
        "state_dict keys and checkpoints unchanged; off by default: see benchmarks/compile.py for where it wins",
    )

    @field_validator("devices")
    @classmethod
    def _devices_lightning_accepts(cls, value: int | str) -> int | str:
        # Lightning takes a count (-1 = all), "auto", or device indices "0,1"; anything else fails deep inside it
        text = str(value).strip()
        is_indices = all(part.strip().isdigit() for part in text.split(",")) and text not in ("0", "")
        if text not in ("auto", "-1") and not is_indices:
            raise ValueError(f"expected a device count >= 1, -1 (all), 'auto' or indices like '0,1'; got {value!r}")
        return value

    @field_validator("limit_train_batches")
    @classmethod
    def _limit_is_a_count_or_fraction(cls, value: int | float | None) -> int | float | None:
        is_fraction = isinstance(value, float) and 0.0 < value <= 1.0  # False for NaN
        if value is not None and not is_fraction and not (isinstance(value, int) and value >= 1):
            raise ValueError(f"expected a number of batches >= 1 or a fraction in (0, 1]; got {value!r}")
        return value

    def resolved_precision(self) -> str:
        """The precision this engine trains in on this machine (`auto` resolved: pretrainlab.precision)."""
        return resolve_precision(self.precision, device_type_of(self.accelerator))

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
        checkpoint: written at every epoch end (and within epochs as `engine` says); None = no checkpoint.
        channels_last: override `engine.channels_last`.

    With `engine.compile`, the method's networks are compiled in place first (`compile_networks`).

    Raises:
        NonFiniteLossError: a step's loss was NaN / Inf with no skip left (`engine.skip_nonfinite_steps`).
        CompileUnavailableError: `engine.compile` is set and torch.compile does not work here (one line).
    """
    if engine.num_threads is not None:
        torch.set_num_threads(engine.num_threads)
    if len(data.dataset) < data.batch_size:
        raise ValueError(
            f"the batch size {data.batch_size} is larger than the training set ({len(data.dataset)} samples"
            f"{f' in {data.description}' if data.description else ''})"
        )
    loader = ResumableLoader(data)
    resume_from = checkpoint if checkpoint is not None and checkpoint.is_file() else None
    # without a checkpoint the run starts over: every line of an earlier attempt is dropped
    resume_step, last_logged_step = saved_steps(resume_from) if resume_from is not None else (None, -1)
    last_checkpoint = None
    if checkpoint is not None:
        last_checkpoint = LastCheckpoint(
            checkpoint, loader, every_n_steps=engine.checkpoint_every_n_steps,
            every_minutes=engine.checkpoint_every_minutes, saved_step=resume_step,
        )  # fmt: skip
    # The checkpoint goes after the other callbacks: an epoch-end checkpoint then holds the RNG state after
    # what they drew at that epoch's end (a kNN evaluation's loaders draw from torch's RNG), and a run killed
    # before it redoes them, so a resumed run continues exactly as the uninterrupted one (tests/soak).
    all_callbacks: list[L.Callback] = [*callbacks, *([last_checkpoint] if last_checkpoint is not None else [])]
    if engine.progress_bar:
        all_callbacks.append(RichProgressBar(refresh_rate=5, leave=True))
    trainer = L.Trainer(
        default_root_dir=logs_dir,
        max_epochs=max_epochs,
        accelerator=engine.accelerator,
        devices=engine.devices,
        num_nodes=engine.num_nodes,
        strategy=engine.strategy,
        precision=engine.resolved_precision(),
        logger=[
            JsonlLogger(metrics_path, resume_step=last_logged_step),
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
    if engine.compile:
        log.info("engine.compile: compiled %s", ", ".join(compile_networks(method)))
    module = EngineModule(
        method, optim, make_schedules, channels_last=use_channels_last,
        skip_nonfinite_steps=engine.skip_nonfinite_steps, last_checkpoint=last_checkpoint,
    )  # fmt: skip
    started = time.perf_counter()
    trainer.fit(module, train_dataloaders=loader, ckpt_path=resume_from)
    log.info("training to epoch %d took %.1f s", max_epochs, time.perf_counter() - started)
    return trainer

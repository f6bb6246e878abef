"""Run one pretraining from a config into its run directory, resumably.

    runs/<name>/config.yaml          resolved config
                metrics.jsonl        one JSON object per log step / evaluation
                checkpoints/last.ckpt
                eval/*.json
                logs/                TensorBoard + CSV
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from pretrainlab.config.loading import ConfigError, dump_config, validate_config
from pretrainlab.config.schema import Config
from pretrainlab.data.loaders import (
    build_eval_loaders,
    build_pretrain_loader,
    ensure_dataset,
)
from pretrainlab.engine.checkpointing import AtomicCheckpointIO, LastCheckpoint
from pretrainlab.engine.jsonl_logger import JsonlLogger
from pretrainlab.engine.malloc import keep_freed_memory
from pretrainlab.engine.module import PretrainModule
from pretrainlab.engine.schedules import build_schedules
from pretrainlab.eval.knn_eval import KNNEvalCallback
from pretrainlab.methods import Method, build_method

log = logging.getLogger(__name__)


def checkpoint_path(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "last.ckpt"


def load_run_config(run_dir: Path) -> Config:
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run directory: {path} not found")
    return validate_config(yaml.safe_load(path.read_text()) or {}, str(path))


def prepare_run_dir(config: Config, *, resume: bool) -> Path:
    """Create the run directory, or check that resuming it uses the same config."""
    run_dir = config.run_dir
    saved = run_dir / "config.yaml"
    if saved.exists():
        if not resume:
            raise FileExistsError(f"run directory {run_dir} exists; pass --resume to continue it or choose a new name")
        if load_run_config(run_dir) != config:
            raise ConfigError(
                f"{saved} differs from the given config; resume with the saved config or choose a new name"
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    saved.write_text(dump_config(config))
    return run_dir


def pretrain(config: Config, *, resume: bool = False) -> Path:
    """Pretrain (or continue pretraining) `config` and return its run directory."""
    run_dir = prepare_run_dir(config, resume=resume)
    keep_freed_memory()
    if config.engine.num_threads is not None:
        torch.set_num_threads(config.engine.num_threads)
    ensure_dataset(config)

    train_loader = build_pretrain_loader(config)
    steps_per_epoch = len(train_loader)
    if config.engine.limit_train_batches is not None:
        limit = config.engine.limit_train_batches
        steps_per_epoch = int(limit) if isinstance(limit, int) else max(1, int(steps_per_epoch * limit))
    if steps_per_epoch < 1:
        raise ValueError(
            f"data.batch_size={config.data.batch_size} is larger than the training set "
            f"({len(train_loader.dataset)} images under {config.data.root / config.data.train_dir})"
        )
    schedules = build_schedules(config, steps_per_epoch)
    L.seed_everything(config.seed, workers=True, verbose=False)  # right before building: see random_init_method
    method = build_method(config, steps_per_epoch)
    module = PretrainModule(method, config.optim, schedules, channels_last=config.engine.channels_last)

    ckpt = checkpoint_path(run_dir)
    resume_from = ckpt if resume and ckpt.exists() else None
    resume_step = None  # metrics.jsonl lines past the checkpoint are dropped on resume
    if resume_from is not None:
        resume_step = torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]
    elif resume:
        resume_step = 0
    eval_train, eval_val = build_eval_loaders(config)
    callbacks: list[L.Callback] = [
        LastCheckpoint(ckpt),
        KNNEvalCallback(
            eval_train,
            eval_val,
            config.eval.knn,
            run_dir / "eval",
            random_init_baseline=config.eval.random_init_baseline,
        ),
    ]
    if config.engine.progress_bar:
        callbacks.append(RichProgressBar(refresh_rate=5, leave=True))
    trainer = L.Trainer(
        default_root_dir=run_dir,
        max_epochs=config.engine.max_epochs,
        accelerator=config.engine.accelerator,
        devices=config.engine.devices,
        num_nodes=config.engine.num_nodes,
        strategy=config.engine.strategy,
        precision=config.engine.precision,
        logger=[
            JsonlLogger(run_dir / "metrics.jsonl", resume_step=resume_step),
            CSVLogger(run_dir / "logs", name="csv", version=""),
            TensorBoardLogger(run_dir / "logs", name="tensorboard", version=""),
        ],
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        enable_checkpointing=False,
        enable_progress_bar=config.engine.progress_bar,
        enable_model_summary=False,
        log_every_n_steps=config.engine.log_every_n_steps,
        limit_train_batches=config.engine.limit_train_batches,
        num_sanity_val_steps=0,
        deterministic=False,
    )
    started = time.perf_counter()
    trainer.fit(module, train_dataloaders=train_loader, ckpt_path=resume_from)
    log.info("pretraining of %s took %.1f s", run_dir, time.perf_counter() - started)
    return run_dir


def random_init_method(config: Config) -> Method:
    """The method exactly as pretraining started: same seed, same construction order."""
    L.seed_everything(config.seed, workers=True, verbose=False)
    return build_method(config, steps_per_epoch=1)


def load_pretrained_method(run_dir: Path) -> tuple[Config, Method, dict]:
    """The run's config, its method with the weights of `last.ckpt`, and the raw checkpoint."""
    config = load_run_config(run_dir)
    ckpt = checkpoint_path(run_dir)
    if not ckpt.exists():
        raise FileNotFoundError(f"{run_dir}: no checkpoint at {ckpt}; has the run started?")
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    method = build_method(config, steps_per_epoch=1)
    prefix = "method."
    method.load_state_dict({k[len(prefix) :]: v for k, v in state["state_dict"].items() if k.startswith(prefix)})
    return config, method, state

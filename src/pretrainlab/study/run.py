"""A run's pretraining and its methods: the run directory's config, pretraining to an epoch
(resumably, on any number of processes), the pretrained and the random-init method."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L

from pretrainlab.config.loading import ConfigError, dump_config, validate_config
from pretrainlab.config.schema import Config
from pretrainlab.data.loaders import build_eval_loaders, ensure_dataset
from pretrainlab.distributed import is_rank_zero
from pretrainlab.engine.malloc import keep_freed_memory
from pretrainlab.engine.optim import cosine_lr_and_weight_decay
from pretrainlab.engine.replicas import ReplicaCheck
from pretrainlab.engine.schedules import Schedules
from pretrainlab.engine.trainer import fit
from pretrainlab.eval.knn_eval import KNNEvalCallback
from pretrainlab.methods.base import Method, build_method
from pretrainlab.run_dir import RunDir
from pretrainlab.run_lock import hold_run_lock

log = logging.getLogger(__name__)


def load_run_config(path: Path) -> Config:
    run = RunDir(path)
    return validate_config(run.read_config_data(), str(run.config_path))


def prepare_run_dir(config: Config, *, resume: bool) -> RunDir:
    """Create the run directory, or check that resuming it uses the same config.

    Only the process of rank 0 checks and writes: the other processes of a multi-process run
    (started by Lightning's launcher, torchrun or SLURM) find the directory rank 0 created. Callers hold
    the run's lock (`run_lock.hold_run_lock`).
    """
    run = RunDir(config.run_dir)
    if not is_rank_zero():
        return run
    if run.exists():
        if not resume:
            raise FileExistsError(f"run directory {run.path} exists; pass --resume to continue it or choose a new name")
        if load_run_config(run.path) != config:
            raise ConfigError(
                f"{run.config_path} differs from the given config; resume with the saved config or choose a new name"
            )
    run.write_config(dump_config(config))
    return run


def make_pretrain_schedules(config: Config):  # noqa: ANN201 - the engine's MakeSchedules
    """(steps per epoch of this process, world size) -> the lr / weight-decay and the method's schedules
    over all of `engine.max_epochs`; the lr scales with the global batch."""

    def make(steps_per_epoch: int, world_size: int) -> Schedules:
        total = config.engine.max_epochs * steps_per_epoch
        lr, weight_decay = cosine_lr_and_weight_decay(
            config.optim, total_iters=total, steps_per_epoch=steps_per_epoch,
            global_batch_size=config.data.batch_size * world_size,
        )  # fmt: skip
        return Schedules(steps_per_epoch, lr, weight_decay, config.method.schedules(total, steps_per_epoch))

    return make


def pretrain(config: Config, *, until_epoch: int | None = None, resume: bool = False, knn_callback: bool = True) -> RunDir:
    """Pretrain `config` up to epoch `until_epoch` (default: all of `engine.max_epochs`), continuing
    `pretrain/checkpoints/last.ckpt` when resuming; returns the run directory. Holds the run's lock.

    Raises:
        RunLockedError: another process is writing the run directory.
    """
    with hold_run_lock(config.run_dir):
        run = prepare_run_dir(config, resume=resume)
        keep_freed_memory()
        if is_rank_zero():
            ensure_dataset(config)
        data = config.method.train_data(config)
        L.seed_everything(config.seed, workers=True, verbose=False)  # right before building: see random_init_method
        method = build_method(config)
        callbacks: list[L.Callback] = [ReplicaCheck(run.path / "replicas.json")]
        if knn_callback and config.eval.knn.every_n_epochs > 0:
            eval_train, eval_val = build_eval_loaders(config)
            callbacks.append(KNNEvalCallback(eval_train, eval_val, config.eval.knn))
        fit(method, data, optim=config.optim, make_schedules=make_pretrain_schedules(config), engine=config.engine,
            max_epochs=until_epoch or config.engine.max_epochs, metrics_path=run.metrics, logs_dir=run.logs,
            checkpoint=run.checkpoint, callbacks=callbacks)  # fmt: skip
    return run


def random_init_method(config: Config) -> Method:
    """The method exactly as pretraining started: same seed, same construction order."""
    L.seed_everything(config.seed, workers=True, verbose=False)
    return build_method(config)


def load_pretrained_method(run_dir: Path) -> tuple[Config, Method, dict]:
    """The run's config, its method with the weights of `last.ckpt`, and the raw checkpoint
    (read with `weights_only=True`; a checkpoint holding code is refused)."""
    config = load_run_config(run_dir)
    state = RunDir(run_dir).load_checkpoint()
    method = build_method(config)
    prefix = "method."
    method.load_state_dict({k[len(prefix) :]: v for k, v in state["state_dict"].items() if k.startswith(prefix)})
    return config, method, state

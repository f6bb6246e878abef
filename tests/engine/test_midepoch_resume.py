"""Checkpoints within an epoch (`engine.checkpoint_every_n_steps`): a run killed after one resumes
to the uninterrupted run's batches, weights and metrics."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import KILLER, REPO_ROOT, tiny_run_overrides
from torch import Tensor, nn
from torch.utils.data import Dataset, default_collate

from pretrainlab.config import load_config
from pretrainlab.data.train_data import EpochSampler, IterationSampler, ResumableLoader, TrainData
from pretrainlab.engine.checkpointing import MID_EPOCH, LastCheckpoint
from pretrainlab.engine.optim import OptimConfig
from pretrainlab.engine.schedules import Schedules, StepValues
from pretrainlab.engine.trainer import EngineConfig, fit
from pretrainlab.methods.base import Method
from pretrainlab.models.backbones.base import Backbone
from pretrainlab.run_dir import RunDir, load_checkpoint, read_jsonl
from pretrainlab.study.run import pretrain



@pytest.mark.slow
def test_run_killed_after_a_mid_epoch_checkpoint_resumes_to_identical_weights_and_metrics(
    tiny_synthetic: Path, tmp_path: Path
) -> None:
    # 4 steps per epoch; checkpoints after steps 3 (mid-epoch), 4 (epoch end), 6 (mid-epoch); killed before
    # step 7 runs, so step 6 (logged) is lost and redone. Drop-path draws from torch's global RNG in every
    # step, DINO has a center buffer and an EMA teacher: all must continue exactly.
    extra = {
        "method.name": "dino", "method.head": {"out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16},
        "method.crops": {"num_local": 0}, "backbone.drop_path_rate": 0.1, "data.batch_size": 8,
        "engine.max_epochs": 2, "engine.limit_train_batches": 4, "engine.checkpoint_every_n_steps": 3,
        "engine.log_every_n_steps": 1, "eval.random_init_baseline": False,
    }  # fmt: skip
    reference = pretrain(load_config(None, tiny_run_overrides(tiny_synthetic, tmp_path / "a", **extra)))

    overrides = tiny_run_overrides(tiny_synthetic, tmp_path / "b", **extra)
    killed = subprocess.run([sys.executable, "-c", KILLER.format(kill_at=7), *overrides], cwd=REPO_ROOT,
                            capture_output=True, text=True, check=False, timeout=300)  # fmt: skip
    assert killed.returncode == 9, killed.stderr[-2000:]
    config = load_config(None, overrides)
    state = load_checkpoint(RunDir(config.run_dir).checkpoint)
    assert state["global_step"] == 6 and state["epoch"] == 1 and state[MID_EPOCH]
    # what Lightning keeps of the loader: 2 batches of epoch 1 were read
    assert state["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "batches": 2}]
    weights = state["state_dict"]
    assert any(key.startswith("method.teacher.") for key in weights) and "method.loss.center" in weights
    assert max(line["step"] for line in RunDir(config.run_dir).read_metrics()) == 6  # logged, then lost

    resumed = pretrain(config, resume=True)
    expected, actual = RunDir(reference.path).load_checkpoint(), RunDir(resumed.path).load_checkpoint()
    assert expected["global_step"] == actual["global_step"] == 8
    assert expected["state_dict"].keys() == actual["state_dict"].keys()
    for key, value in expected["state_dict"].items():
        torch.testing.assert_close(actual["state_dict"][key], value, rtol=0, atol=0, msg=f"{key} differs after resume")
    metrics = RunDir(resumed.path).read_metrics()
    assert metrics == RunDir(reference.path).read_metrics()
    assert [line["step"] for line in metrics] == list(range(8))  # each step once


class KeyedPoints(Dataset):
    """(epoch, index) -> (the key as a tensor (2,), a point (3,))."""

    def __init__(self, num_points: int) -> None:
        self.points = torch.randn(num_points, 3, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, Tensor]:
        return torch.tensor(key), self.points[key[1]]


class StopAtStep(Exception):
    """Raised by `RecordsKeys` to end a run in the middle, as a kill would (no checkpoint of its own)."""


class RecordsKeys(Method):
    """A linear model; records the (epoch, index) keys of every batch it trains on."""

    def __init__(self, stop_at: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(3, 1)
        self.stop_at = stop_at
        self.keys: list[list[tuple[int, int]]] = []

    def training_step(self, batch: tuple[Tensor, Tensor], step: StepValues) -> dict[str, Tensor]:
        if step.iteration == self.stop_at:
            raise StopAtStep
        keys, points = batch  # (B, 2), (B, 3)
        self.keys.append([tuple(key) for key in keys.tolist()])
        return {"loss": self.linear(points).square().mean()}

    def eval_backbone(self) -> Backbone:
        raise AssertionError("not evaluated")


def fit_points(method: RecordsKeys, tmp_path: Path, *, num_workers: int, max_epochs: int = 3) -> None:
    """12 points, batches of 2: 6 steps per epoch, a checkpoint every 4 steps and at epoch ends."""
    data = TrainData(KeyedPoints(12), EpochSampler(12, seed=3), default_collate, 2, num_workers=num_workers)
    optim = OptimConfig(name="adamw", lr=0.1, min_lr=0.1, warmup_epochs=0.0, clip_grad=None, scale_lr_with_batch=False)

    def schedules(steps_per_epoch: int, world_size: int) -> Schedules:
        total = steps_per_epoch * max_epochs
        return Schedules(steps_per_epoch, np.full(total, 0.1), np.full(total, 0.01))

    engine = EngineConfig(precision="32", progress_bar=False, checkpoint_every_n_steps=4, log_every_n_steps=1)
    fit(method, data, optim=optim, make_schedules=schedules, engine=engine, max_epochs=max_epochs,
        metrics_path=tmp_path / "metrics.jsonl", logs_dir=tmp_path / "logs", checkpoint=tmp_path / "last.ckpt")  # fmt: skip


@pytest.mark.parametrize("num_workers", [0, 1])
@pytest.mark.parametrize(("stop_at", "checkpoint_step"), [(11, 8), (17, 16), (12, 12)])
def test_batches_after_a_resume_are_the_rest_of_the_uninterrupted_run(
    tmp_path: Path, num_workers: int, stop_at: int, checkpoint_step: int
) -> None:
    """Stopped after the mid-epoch checkpoints of steps 8 (epoch 1) and 16 (epoch 2), or at the start of
    epoch 2 (its epoch-end checkpoint of step 12): the resumed run reads the remaining batches, also when
    its first epoch starts persistent workers."""
    uninterrupted = RecordsKeys()
    fit_points(uninterrupted, tmp_path / "a", num_workers=num_workers)
    assert [sorted(i for step in uninterrupted.keys[6 * e : 6 * e + 6] for _, i in step) for e in range(3)] == [
        list(range(12))
    ] * 3  # every epoch reads every point once
    assert {e for step in uninterrupted.keys[12:] for e, _ in step} == {2}

    stopped = RecordsKeys(stop_at=stop_at)
    with pytest.raises(StopAtStep):
        fit_points(stopped, tmp_path / "b", num_workers=num_workers)
    state = load_checkpoint(tmp_path / "b" / "last.ckpt")
    assert state["global_step"] == checkpoint_step and state[MID_EPOCH] == (checkpoint_step % 6 != 0)
    resumed = RecordsKeys()
    fit_points(resumed, tmp_path / "b", num_workers=num_workers)
    assert resumed.keys == uninterrupted.keys[checkpoint_step:]
    torch.testing.assert_close(resumed.linear.weight, uninterrupted.linear.weight, rtol=0, atol=0)
    assert read_jsonl(tmp_path / "b" / "metrics.jsonl") == read_jsonl(tmp_path / "a" / "metrics.jsonl")


def test_no_mid_epoch_checkpoint_on_the_last_batch_of_an_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Steps 4 and 8 are inside epochs 0 and 1; step 12 ends epoch 1 and is left to the epoch-end checkpoint."""
    saved: list[tuple[int, bool]] = []
    original = LastCheckpoint.on_save_checkpoint

    def record(self: LastCheckpoint, trainer: object, pl_module: object, checkpoint: dict) -> None:
        original(self, trainer, pl_module, checkpoint)
        saved.append((trainer.global_step, checkpoint[MID_EPOCH]))

    monkeypatch.setattr(LastCheckpoint, "on_save_checkpoint", record)
    fit_points(RecordsKeys(), tmp_path, num_workers=0, max_epochs=2)
    assert saved == [(4, True), (6, False), (8, True), (12, False)]


def test_epoch_sampler_resumes_after_the_entries_read() -> None:
    sampler = EpochSampler(10, seed=1)
    sampler.set_epoch(3)
    whole = list(sampler)
    sampler.resume_epoch_at(3, 4)
    assert list(sampler) == whole[4:] and len(sampler) == 10
    sampler.set_epoch(4)  # other epochs are read whole
    assert len(list(sampler)) == 10 and sampler.first_entry() == 0
    with pytest.raises(ValueError, match="after 11 of its 10"):
        sampler.resume_epoch_at(4, 11)


@pytest.mark.parametrize("fresh_permutation_per_batch", [False, True])
def test_iteration_sampler_resumes_after_whole_batches(fresh_permutation_per_batch: bool) -> None:
    sampler = IterationSampler(7, 3, iterations=5, seed=2, fresh_permutation_per_batch=fresh_permutation_per_batch)
    whole = list(sampler)
    sampler.resume_epoch_at(0, 6)
    assert list(sampler) == whole[6:] and len(sampler) == 15
    with pytest.raises(ValueError, match="whole batches of 3"):
        sampler.resume_epoch_at(0, 4)


def test_loader_state_round_trip() -> None:
    """The state after 2 batches of epoch 1, loaded into a new loader, gives the other batches of epoch 1."""
    data = TrainData(KeyedPoints(12), EpochSampler(12, seed=3), default_collate, 2)
    loader = ResumableLoader(data)
    loader.sampler.set_epoch(1)
    batches = iter(loader)
    next(batches), next(batches)
    rest = [keys.tolist() for keys, _ in batches]
    assert loader.state_dict() == {"epoch": 1, "batches": 6}
    batches = iter(loader)
    next(batches), next(batches)
    assert loader.state_dict() == {"epoch": 1, "batches": 2}

    resumed = ResumableLoader(TrainData(KeyedPoints(12), EpochSampler(12, seed=3), default_collate, 2))
    resumed.load_state_dict({"epoch": 1, "batches": 2})
    resumed.sampler.set_epoch(1)  # what Lightning does before the epoch's first batch
    random_before = torch.get_rng_state()
    assert [keys.tolist() for keys, _ in resumed] == rest and len(resumed) == 6
    assert torch.equal(torch.get_rng_state(), random_before)  # the epoch's seed draw is not made twice
    assert resumed.state_dict() == {"epoch": 1, "batches": 6}


def test_checkpoints_are_due_after_the_minutes_since_the_last_one(tmp_path: Path) -> None:
    loader = ResumableLoader(TrainData(KeyedPoints(12), EpochSampler(12, seed=3), default_collate, 2))
    callback = LastCheckpoint(tmp_path / "last.ckpt", loader, every_n_steps=5, every_minutes=1.0)
    assert not callback.is_due(global_step=3) and callback.is_due(global_step=10)
    callback._last_save -= 61.0  # a minute and a second ago
    assert callback.is_due(global_step=3)


TWO_RANKS = textwrap.dedent(
    """
    import json, sys
    import torch
    import torch.distributed as dist
    from torch.utils.data import default_collate
    from pretrainlab.data.train_data import EpochSampler, ResumableLoader, TrainData

    rank, init_file = int(sys.argv[1]), sys.argv[2]
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    keys = {(epoch, index): torch.tensor([epoch, index]) for epoch in range(2) for index in range(12)}
    whole = ResumableLoader(TrainData(keys, EpochSampler(12, seed=3), default_collate, 2))
    whole.sampler.set_epoch(1)
    resumed = ResumableLoader(TrainData(keys, EpochSampler(12, seed=3), default_collate, 2))
    resumed.load_state_dict({"epoch": 1, "batches": 1})  # what rank 0 saved: every rank had read 1 batch
    resumed.sampler.set_epoch(1)
    batches = ([keys.tolist() for keys in whole], [keys.tolist() for keys in resumed])
    gathered = [None, None]
    dist.all_gather_object(gathered, batches)
    if rank == 0:
        print(json.dumps(gathered))
    dist.destroy_process_group()
    """
)


def test_two_ranks_resume_after_their_own_batches(tmp_path: Path) -> None:
    """Each of 2 processes skips the batch of its own shard it had read; the batches they read after the resume
    are, together, those one process with the doubled batch reads after its first."""
    init_file = str(tmp_path / "rendezvous")
    ranks = [subprocess.Popen([sys.executable, "-c", TWO_RANKS, str(rank), init_file], cwd=REPO_ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in range(2)]  # fmt: skip
    outputs = [process.communicate(timeout=120) for process in ranks]
    assert [process.returncode for process in ranks] == [0, 0], outputs[1][1][-2000:] + outputs[0][1][-2000:]
    (whole_0, resumed_0), (whole_1, resumed_1) = json.loads(outputs[0][0])
    assert resumed_0 == whole_0[1:] and resumed_1 == whole_1[1:] and len(whole_0) == 3

    single = ResumableLoader(TrainData(KeyedPoints(12), EpochSampler(12, seed=3), default_collate, 4))
    single.sampler.set_epoch(1)
    one_process = [sorted(map(tuple, keys.tolist())) for keys, _ in single]
    assert [sorted(map(tuple, a + b)) for a, b in zip(resumed_0, resumed_1, strict=True)] == one_process[1:]

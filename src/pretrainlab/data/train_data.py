"""What a method trains on, handed to the engine: a dataset, a sampler, a collate.

`EpochSampler` shards deterministically across processes: the order of an epoch depends
only on (seed, epoch); with W processes the first `W * floor(N / W)` entries are dealt
round-robin, so rank r reads entries r, r + W, r + 2W, ... Batch t of rank r together with
batch t of the other ranks is exactly batch t of one process with a W times larger batch.
The engine calls `set_epoch` (Lightning does, on `DataLoader.sampler`) at every epoch.

Resuming in the middle of an epoch: `ResumableLoader` counts the batches it has handed
out in the current epoch and, given that count back from a checkpoint, has the sampler
start the epoch after them (`resume_epoch_at`). Since the order depends only on (seed,
epoch) and every sample is keyed by (epoch, index), the batches read after the resume are
exactly the rest of the epoch an uninterrupted run would have read. Each process skips the
batches of its own shard; all processes have read the same number.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from pretrainlab.distributed import rank, world_size


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields (epoch, index) pairs of this process's shard; the permutation depends only on (seed, epoch).

    `len()` is always the whole shard (the epoch's length for schedules and progress), also
    when the epoch is resumed and its iteration yields only the rest (`resume_epoch_at`).
    """

    def __init__(self, num_samples: int, seed: int, shuffle: bool = True) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.resume_point = (0, 0)  # (epoch, entries of this process's shard already read in it)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_epoch_at(self, epoch: int, num_read: int) -> None:
        """Iterating `epoch` starts after the first `num_read` entries of this process's shard (a run
        resumed from a checkpoint written in the middle of `epoch`); every other epoch is read whole."""
        if not 0 <= num_read <= len(self):
            raise ValueError(f"cannot resume epoch {epoch} after {num_read} of its {len(self)} entries")
        self.resume_point = (epoch, num_read)

    def first_entry(self) -> int:
        """How many entries of this process's shard the iteration of the current epoch skips."""
        epoch, num_read = self.resume_point
        return num_read if epoch == self.epoch else 0

    def __len__(self) -> int:
        return self.num_samples // world_size()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        shard = order[: len(self) * world_size()][rank() :: world_size()]
        return iter((self.epoch, index) for index in shard[self.first_entry() :])


class IterationSampler(Sampler[int]):
    """`iterations` batches of `batch_size` indices as one epoch, for iteration-based training
    (segmentation finetuning, MMSeg-style).

    `fresh_permutation_per_batch=False`: epochs of a random permutation, cut into full
    batches (a DataLoader's `shuffle=True, drop_last=True`), continued over as many epochs
    as the iterations need. `True`: every batch is the first entries of a fresh permutation
    (sampling batches independently, e.g. from cached features). The global batch of W
    processes is `W * batch_size` consecutive entries; rank r takes its slice.

    The order does not depend on the epoch (one epoch is the whole run). A resumed iteration
    (`resume_epoch_at`) still draws the permutations of the batches it skips, so the batches
    after them are the uninterrupted run's; `len()` stays all of them.
    """

    def __init__(self, num_samples: int, batch_size: int, iterations: int, seed: int, *,
                 fresh_permutation_per_batch: bool = False) -> None:  # fmt: skip
        if num_samples < 1 or batch_size < 1 or iterations < 1:
            raise ValueError(f"need samples, batch size and iterations >= 1, got {num_samples}, {batch_size}, {iterations}")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.iterations = iterations
        self.seed = seed
        self.fresh_permutation_per_batch = fresh_permutation_per_batch
        self.epoch = 0
        self.resume_point = (0, 0)  # (epoch, entries of this process already read in it)

    def set_epoch(self, epoch: int) -> None:
        """Recorded for resuming; the order is the same in every epoch."""
        self.epoch = epoch

    def resume_epoch_at(self, epoch: int, num_read: int) -> None:
        """Iterating `epoch` starts after its first `num_read` entries of this process (whole batches)."""
        if num_read % self.batch_size or not 0 <= num_read <= len(self):
            raise ValueError(f"cannot resume after {num_read} entries: not whole batches of {self.batch_size} "
                             f"within the {len(self)} of an epoch")  # fmt: skip
        self.resume_point = (epoch, num_read)

    def first_entry(self) -> int:
        """How many entries of this process the iteration of the current epoch skips."""
        epoch, num_read = self.resume_point
        return num_read if epoch == self.epoch else 0

    def __len__(self) -> int:
        return self.iterations * self.batch_size

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed)
        global_batch = self.batch_size * world_size()
        start = rank() * self.batch_size
        if global_batch > self.num_samples:
            raise ValueError(f"a batch of {global_batch} (all processes) exceeds the {self.num_samples} samples")
        skipped_iterations = self.first_entry() // self.batch_size
        pending: list[int] = []
        for iteration in range(self.iterations):
            if self.fresh_permutation_per_batch:
                batch = torch.randperm(self.num_samples, generator=generator)[:global_batch].tolist()
            else:
                if len(pending) < global_batch:
                    pending = torch.randperm(self.num_samples, generator=generator).tolist()
                batch, pending = pending[:global_batch], pending[global_batch:]
            if iteration >= skipped_iterations:
                yield from batch[start : start + self.batch_size]


@dataclass
class TrainData:
    """A method's training data: the engine wraps it in a DataLoader (`num_workers` from `data`)."""

    dataset: Dataset
    sampler: EpochSampler | IterationSampler
    collate: Callable[[list[Any]], Any]
    batch_size: int
    num_workers: int = 0
    drop_last: bool = True
    description: str = ""  # e.g. the folder, for errors and logs


class ResumableLoader(DataLoader):
    """The DataLoader of `TrainData` that a checkpoint written in the middle of an epoch resumes exactly.

    It counts the batches it has handed out in the current epoch (`position`: (epoch, batches)).
    `state_dict()` / `load_state_dict()` make it resumable in Lightning's sense: Lightning stores the
    state in every checkpoint and, when resuming one written in the middle of an epoch, loads it
    before that epoch's first batch is fetched; the sampler then starts the epoch after the batches
    already read (`resume_epoch_at`). Lightning fetches one batch per training step (the loader has a
    length, so it does not prefetch), so at the end of step t of an epoch the count is t + 1.

    Iterating is lazy: the underlying iterator (and its workers' first indices) is created at the
    first `next`, after Lightning's `set_epoch` for that epoch, so a resumed run never reads the
    order of the sampler's previous epoch. Creating it may draw the workers' base seed from torch's
    global RNG (at every epoch without persistent workers, at the first with them). For an epoch
    resumed in the middle, the uninterrupted run made that draw before the checkpoint's RNG state
    was saved, so the resumed run makes it without moving the global RNG.
    """

    def __init__(self, data: TrainData) -> None:
        super().__init__(
            data.dataset,
            batch_size=data.batch_size,
            sampler=data.sampler,
            num_workers=data.num_workers,
            collate_fn=data.collate,
            drop_last=data.drop_last,
            persistent_workers=data.num_workers > 0,
        )
        self.position = (0, 0)  # (epoch, batches of it handed out)

    def state_dict(self) -> dict[str, int]:
        epoch, batches = self.position
        return {"epoch": epoch, "batches": batches}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        epoch, batches = int(state_dict["epoch"]), int(state_dict["batches"])
        self.sampler.resume_epoch_at(epoch, batches * self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        return self._epoch_batches()

    def _epoch_batches(self) -> Iterator[Any]:
        epoch, skipped = self.sampler.epoch, self.sampler.first_entry() // self.batch_size
        self.position = (epoch, skipped)
        with torch.random.fork_rng(devices=[], enabled=skipped > 0):
            batches = super().__iter__()
        for batch in batches:
            self.position = (epoch, self.position[1] + 1)
            yield batch

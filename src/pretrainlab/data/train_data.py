"""What a method trains on, handed to the engine: a dataset, a sampler, a collate.

`EpochSampler` shards deterministically across processes: the order of an epoch depends
only on (seed, epoch); with W processes the first `W * floor(N / W)` entries are dealt
round-robin, so rank r reads entries r, r + W, r + 2W, ... Batch t of rank r together with
batch t of the other ranks is exactly batch t of one process with a W times larger batch.
The engine calls `set_epoch` (Lightning does, on `DataLoader.sampler`) at every epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from pretrainlab.distributed import rank, world_size


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields (epoch, index) pairs of this process's shard; the permutation depends only on (seed, epoch)."""

    def __init__(self, num_samples: int, seed: int, shuffle: bool = True) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples // world_size()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        shard = order[: len(self) * world_size()][rank() :: world_size()]
        return iter((self.epoch, index) for index in shard)


class IterationSampler(Sampler[int]):
    """`iterations` batches of `batch_size` indices as one epoch, for iteration-based training
    (segmentation finetuning, MMSeg-style).

    `fresh_permutation_per_batch=False`: epochs of a random permutation, cut into full
    batches (a DataLoader's `shuffle=True, drop_last=True`), continued over as many epochs
    as the iterations need. `True`: every batch is the first entries of a fresh permutation
    (sampling batches independently, e.g. from cached features). The global batch of W
    processes is `W * batch_size` consecutive entries; rank r takes its slice.
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

    def set_epoch(self, epoch: int) -> None:
        """One epoch is the whole run: nothing changes between epochs."""

    def __len__(self) -> int:
        return self.iterations * self.batch_size

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed)
        global_batch = self.batch_size * world_size()
        start = rank() * self.batch_size
        if global_batch > self.num_samples:
            raise ValueError(f"a batch of {global_batch} (all processes) exceeds the {self.num_samples} samples")
        pending: list[int] = []
        for _ in range(self.iterations):
            if self.fresh_permutation_per_batch:
                batch = torch.randperm(self.num_samples, generator=generator)[:global_batch].tolist()
            else:
                if len(pending) < global_batch:
                    pending = torch.randperm(self.num_samples, generator=generator).tolist()
                batch, pending = pending[:global_batch], pending[global_batch:]
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

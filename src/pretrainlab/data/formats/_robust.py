"""Datasets that skip broken samples instead of crashing a run.

A subclass implements `load(index)`; when it raises `BrokenSampleError` (or an
`OSError` / `ValueError` from an image decoder) the sample is counted, logged once
by path with the count so far, and another index is drawn in its place. A
`ChannelMismatchError` (a readable file whose channels do not fit the configured ones) is a
configuration error and is raised, and so is `BrokenDatasetError` when `max_retries` samples
in a row are broken (a dataset that is unreadable as a whole, e.g. every label in the wrong mode).
"""

from __future__ import annotations

import abc
import logging
import random
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

log = logging.getLogger(__name__)


class BrokenSampleError(Exception):
    """A sample whose file is missing, truncated or undecodable."""


class ChannelMismatchError(ValueError):
    """A readable file whose channel count does not fit the requested channels / channel policy."""


class BrokenDatasetError(ValueError):
    """So many samples in a row are broken that the dataset as a whole is unreadable; names the last one."""


def examples(names: Sequence[object], limit: int = 3) -> str:
    """`": a, b, c, ..."` naming the first `limit` of `names` for a log line, or "" when there are none."""
    if not names:
        return ""
    return ": " + ", ".join(str(name) for name in names[:limit]) + (", ..." if len(names) > limit else "")


class SkippingDataset(Dataset, abc.ABC):
    """Map-style dataset that replaces broken samples by other, randomly drawn ones (with `replaces_broken`
    False, as an evaluation set: returns None for them, and the caller's collate leaves them out).

    A subclass calls `share_broken_flags()` at the end of its `__init__`, once its length is final: the
    broken samples are then flagged in shared memory, so those found by DataLoader worker processes are
    counted in the main process too (`num_broken`, `broken_indices`). Without it, each process counts
    what it met itself.
    """

    max_retries: int = 50
    replaces_broken: bool = True  # False (evaluation sets): a broken sample is None, left out by the collate

    def __init__(self) -> None:
        self._broken_here: set[int] = set()
        self._broken_flags: Tensor | None = None  # (len,) bool in shared memory, one flag per index

    def share_broken_flags(self) -> None:
        """Flag broken samples in shared memory, seen by every DataLoader worker (fork or spawn) and by this
        process; call once the dataset's length is final."""
        self._broken_flags = torch.zeros(len(self), dtype=torch.bool).share_memory_()

    @property
    def broken_indices(self) -> set[int]:
        """The distinct broken indices met so far, by this process and its DataLoader workers."""
        if self._broken_flags is None:
            return set(self._broken_here)
        return set(torch.nonzero(self._broken_flags).flatten().tolist())

    @property
    def num_broken(self) -> int:
        return len(self.broken_indices)

    def _flag_broken(self, index: int) -> bool:
        """Record `index` as broken; True when it had not been recorded yet."""
        if self._broken_flags is None:
            is_new = index not in self._broken_here
            self._broken_here.add(index)
            return is_new
        is_new = not bool(self._broken_flags[index])
        self._broken_flags[index] = True
        return is_new

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def load(self, index: int) -> Any:
        """Load sample `index`; raise BrokenSampleError (or OSError/ValueError) when broken,
        ChannelMismatchError when the file does not fit the configured channels."""

    def describe(self, index: int) -> str:
        """Human-readable name of sample `index` (a file path) for log messages."""
        return f"sample {index}"

    def __getitem__(self, index: int) -> Any:
        candidate, last = index, ""
        for _ in range(self.max_retries):
            try:
                return self.load(candidate)
            except ChannelMismatchError:
                raise
            except (BrokenSampleError, OSError, ValueError) as error:
                last = f"{self.describe(candidate)}: {error}"
                if self._flag_broken(candidate):
                    log.warning("skipping broken %s (%d broken so far)", last, self.num_broken)
                if not self.replaces_broken:
                    return None  # scored by nobody rather than another sample scored twice
                candidate = random.randrange(len(self))
        raise BrokenDatasetError(
            f"{type(self).__name__}: {self.max_retries} broken samples in a row from index {index} of {len(self)} "
            f"({self.num_broken} broken so far); is the dataset readable? The last: {last}"
        )

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
    """Map-style dataset that replaces broken samples by other, randomly drawn ones.

    `num_broken` counts the distinct broken indices seen by this process (workers
    each keep their own count; `broken_indices` is what was seen here).
    """

    max_retries: int = 50

    def __init__(self) -> None:
        self.broken_indices: set[int] = set()

    @property
    def num_broken(self) -> int:
        return len(self.broken_indices)

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
                if candidate not in self.broken_indices:
                    self.broken_indices.add(candidate)
                    log.warning("skipping broken %s (%d broken so far)", last, self.num_broken)
                candidate = random.randrange(len(self))
        raise BrokenDatasetError(
            f"{type(self).__name__}: {self.max_retries} broken samples in a row from index {index} of {len(self)} "
            f"({self.num_broken} broken so far); is the dataset readable? The last: {last}"
        )

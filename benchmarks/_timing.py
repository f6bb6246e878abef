"""Timing helpers shared by the benchmarks: interleaved repeats, FLOP counts, the `--json` output.

On a machine shared with other jobs, load drifts over seconds; timing the contenders
in alternation (A B, B A, A B, ...) exposes both to the same drift, so the ratio of
their medians is the number to trust. Each call is timed by wall clock and by process
CPU time (all threads of this process), the latter being less disturbed by other
processes competing for the same cores. A contender running in another process (MMSeg in its
own venv) times itself there and returns `Measured`.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.flop_counter import FlopCounterMode


@dataclass
class Timings:
    """Wall-clock and CPU seconds of each timed call."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def add(self, wall: float, cpu: float) -> None:
        self.wall.append(wall)
        self.cpu.append(cpu)

    @property
    def median_wall(self) -> float:
        return statistics.median(self.wall)

    @property
    def median_cpu(self) -> float:
        return statistics.median(self.cpu)

    @property
    def best_wall(self) -> float:
        """The fastest call: the least disturbed by other jobs, closest to an idle machine."""
        return min(self.wall)


@dataclass(frozen=True)
class Measured:
    """Seconds a contender measured itself, e.g. in another process, whose CPU time this process's clock
    does not see. A call returning it is timed by these numbers instead of this process's clocks."""

    wall: float
    cpu: float


def time_call(work: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call, or the call's own `Measured` seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = work()
    if isinstance(result, Measured):
        return result.wall, result.cpu
    return time.perf_counter() - wall, time.process_time() - cpu


def time_interleaved(
    contenders: dict[str, Callable[[], object]], *, warmup: int, repeats: int
) -> dict[str, Timings]:
    """Run every contender `warmup` times untimed, then `repeats` times timed, alternating the order each round."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            contenders[name]()
    timings = {name: Timings() for name in names}
    for round_index in range(repeats):
        order = names if round_index % 2 == 0 else names[::-1]
        for name in order:
            timings[name].add(*time_call(contenders[name]))
    return timings


def count_flops(work: Callable[[], object]) -> int:
    """FLOPs of one call as counted by `torch.utils.flop_counter` (matmul, conv, attention; fwd and bwd)."""
    counter = FlopCounterMode(display=False)
    with counter:
        work()
    return counter.get_total_flops()


def write_results(path: Path | None, payload: dict[str, Any]) -> None:
    """Write a benchmark's `--json` file (nothing when `path` is None)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))
    logging.getLogger("benchmarks").info("wrote %s", path)

"""Kill soak: run a CLI workload to the end once, then again with SIGKILLs at random moments, resuming
after each, and compare what the two runs leave behind.

A workload is one `pretrainlab` command line that resumes by being run again (a study continues its
phases, a sweep its unfinished variants). Each attempt runs in its own process group, so a kill also
takes DataLoader workers and landscape pools with it. After every kill the run directory must be
readable: every JSON file parses, every JSONL line but a torn last one parses, every checkpoint loads
with `weights_only=True`. At the end, the weights of every checkpoint / state file and every logged
number (timings and wall-clock fields removed) must equal the uninterrupted run's, bit for bit.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pretrainlab.run_dir import load_checkpoint

# Keys whose values differ between two identical runs: durations, clocks, process ids, paths of the run.
VOLATILE_KEY = re.compile(r"(seconds|second|_s$|time|elapsed|duration|date|started|finished|wall|pid|host|eta)", re.I)
# Files that are measurements of the machine (step profiles: time and memory per section): present in both
# runs and readable, but not compared.
TIMING_FILES = {"profile.json"}
STATE_SUFFIXES = (".ckpt", ".pt")
RECORD_SUFFIXES = (".json", ".jsonl")


@dataclass(frozen=True)
class Workload:
    """A resumable `pretrainlab` command line and the folder it writes below `output_root`."""

    name: str
    argv: list[str]  # after `pretrainlab`, without the output root
    output_override: str = "output_root"  # dotted key receiving the output folder; "" = none
    extra_env: dict[str, str] = field(default_factory=dict)

    def command(self, output_root: Path) -> list[str]:
        output = [f"{self.output_override}={output_root}"] if self.output_override else []
        return [sys.executable, "-m", "pretrainlab.cli", "-q", *self.argv, *output]


@dataclass
class SoakResult:
    """What one killed-and-resumed run went through."""

    workload: str
    kills: int = 0
    attempts: int = 0
    reference_seconds: float = 0.0
    startup_seconds: float = 0.0  # until the uninterrupted run created its output folder (imports, config)
    kill_moments: list[float] = field(default_factory=list)  # seconds after each attempt started
    kills_after_a_checkpoint: int = 0  # kills that found a checkpoint to resume from
    compared_files: int = 0


def run_once(workload: Workload, output_root: Path, cwd: Path, *, timeout: float = 600.0) -> tuple[float, float]:
    """Run the workload to its end: (seconds until `output_root` appeared, total seconds). A non-zero exit
    fails with its stderr."""
    started = time.perf_counter()
    startup = None
    with subprocess.Popen(workload.command(output_root), cwd=cwd, env=_env(workload), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True) as process:  # fmt: skip
        while process.poll() is None:
            if startup is None and output_root.exists():
                startup = time.perf_counter() - started
            if time.perf_counter() - started > timeout:
                process.kill()
                raise AssertionError(f"{workload.name}: still running after {timeout:.0f} s")
            time.sleep(0.05)
        stderr = process.stderr.read() if process.stderr else ""
    if process.returncode != 0:
        raise AssertionError(f"{workload.name}: exit status {process.returncode}\n{stderr[-4000:]}")
    total = time.perf_counter() - started
    return (startup if startup is not None else 0.0), total


def run_with_kills(
    workload: Workload,
    output_root: Path,
    cwd: Path,
    *,
    kills: int,
    startup_seconds: float,
    reference_seconds: float,
    rng: random.Random,
) -> SoakResult:
    """Start the workload, SIGKILL its process group at a random moment of its work, check the folder,
    start it again; `kills` times, then let it finish.

    Each attempt is killed a random delay after it first writes progress (a checkpoint, a state file or a
    JSON result changes), the delay drawn from a slice of the work: the uninterrupted run's time after
    its start-up, cut into `kills + 1` slices. So every kill lands while the run works, after it got
    somewhere, and the kills spread over the run. An attempt that ends before its kill is a completed
    run: the remaining kills are not made (`SoakResult.kills` counts the ones made).
    """
    result = SoakResult(workload.name, reference_seconds=reference_seconds, startup_seconds=startup_seconds)
    work_slice = (reference_seconds - startup_seconds) / (kills + 1)
    for _ in range(kills):
        delay = rng.uniform(0.1, 0.9) * work_slice
        before = _progress(output_root)
        started = time.perf_counter()
        progressed_at = None
        with tempfile.TemporaryFile("w+") as stderr:
            process = subprocess.Popen(workload.command(output_root), cwd=cwd, env=_env(workload),
                                       start_new_session=True, stdout=subprocess.DEVNULL, stderr=stderr)  # fmt: skip
            result.attempts += 1
            while process.poll() is None:
                now = time.perf_counter()
                if progressed_at is None and _progress(output_root) != before:
                    progressed_at = now
                if progressed_at is not None and now - progressed_at >= delay:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
                    break
                time.sleep(0.02)
            else:  # the attempt ended by itself
                stderr.seek(0)
                if process.returncode != 0:
                    raise AssertionError(f"{workload.name}: exit status {process.returncode} after a resume\n"
                                         f"{stderr.read()[-4000:]}")  # fmt: skip
                return result
        result.kills += 1
        result.kill_moments.append(round(time.perf_counter() - started, 2))
        assert_readable(output_root)
        result.kills_after_a_checkpoint += any(_files(output_root, (".ckpt",)))
    run_once(workload, output_root, cwd)
    result.attempts += 1
    return result


def _progress(root: Path) -> dict[Path, int]:
    """What a run has written that a resume starts from: its state files and JSON results, by modification time."""
    times = {}
    for path in _files(root, STATE_SUFFIXES + (".json",)):
        with contextlib.suppress(FileNotFoundError):  # replaced or removed while we list
            times[path] = path.stat().st_mtime_ns
    return times


def assert_readable(root: Path) -> None:
    """Every JSON, JSONL (but a torn last line) and checkpoint below `root` can be read."""
    for path in _files(root, RECORD_SUFFIXES + STATE_SUFFIXES):
        try:
            if path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix == ".jsonl":
                lines = path.read_text().splitlines()
                for line in lines[:-1]:
                    json.loads(line)
            else:
                load_checkpoint(path)
        except Exception as error:  # noqa: BLE001 - any failure to read is the finding
            raise AssertionError(f"unreadable after a kill: {path}: {type(error).__name__}: {error}") from error


def assert_same_outputs(reference: Path, resumed: Path) -> int:
    """Weights and logged numbers below `resumed` equal those below `reference`; returns the files compared."""
    reference_files = {p.relative_to(reference) for p in _files(reference, RECORD_SUFFIXES + STATE_SUFFIXES)}
    resumed_files = {p.relative_to(resumed) for p in _files(resumed, RECORD_SUFFIXES + STATE_SUFFIXES)}
    if reference_files != resumed_files:
        raise AssertionError(f"different files: only uninterrupted {sorted(map(str, reference_files - resumed_files))}, "
                             f"only resumed {sorted(map(str, resumed_files - reference_files))}")  # fmt: skip
    for relative in sorted(reference_files):
        a, b = reference / relative, resumed / relative
        if relative.name in TIMING_FILES:
            continue
        if relative.suffix in STATE_SUFFIXES:
            _assert_same(_tensors(load_checkpoint(a)), _tensors(load_checkpoint(b)), str(relative))
        else:
            _assert_same(_records(a, reference), _records(b, resumed), str(relative))
    return len(reference_files)


def _files(root: Path, suffixes: tuple[str, ...]) -> Iterator[Path]:
    return (p for p in sorted(root.rglob("*")) if p.is_file() and p.suffix in suffixes and ".tmp" not in p.name)


def _tensors(state: Any, prefix: str = "") -> dict[str, Any]:
    """The tensors and numbers of a (nested) checkpoint by dotted key; timings and callback states dropped."""
    flat: dict[str, Any] = {}
    if isinstance(state, dict):
        for key, value in state.items():
            if not VOLATILE_KEY.search(str(key)) and key not in ("callbacks", "loops_timing"):
                flat.update(_tensors(value, f"{prefix}{key}."))
    elif isinstance(state, list | tuple):
        for index, value in enumerate(state):
            flat.update(_tensors(value, f"{prefix}{index}."))
    elif isinstance(state, torch.Tensor | int | float | bool | str) or state is None:
        flat[prefix.rstrip(".")] = state
    return flat


def _records(path: Path, root: Path) -> Any:
    lines = path.read_text().splitlines() if path.suffix == ".jsonl" else [path.read_text()]
    return [_without_volatile(json.loads(line), str(root)) for line in lines if line.strip()]


def _without_volatile(value: Any, root: str) -> Any:
    if isinstance(value, dict):
        return {k: _without_volatile(v, root) for k, v in value.items() if not VOLATILE_KEY.search(str(k))}
    if isinstance(value, list):
        return [_without_volatile(v, root) for v in value]
    if isinstance(value, str):
        return value.replace(root, "<root>")
    return value


def _assert_same(a: Any, b: Any, where: str) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            raise AssertionError(f"{where}: keys differ: {sorted(set(a) ^ set(b))[:10]}")
        for key in a:
            _assert_same(a[key], b[key], f"{where}:{key}")
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            raise AssertionError(f"{where}: {len(a)} vs {len(b)} entries")
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{index}]")
    elif isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.shape != b.shape or a.dtype != b.dtype or not torch.equal(a, b):
            raise AssertionError(f"{where}: tensors differ (max |diff| "
                                 f"{(a.double() - b.double()).abs().max().item() if a.shape == b.shape else 'shape'})")  # fmt: skip
    elif isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return
    elif a != b:
        raise AssertionError(f"{where}: {a!r} != {b!r}")


def _env(workload: Workload) -> dict[str, str]:
    """One thread everywhere: the same reduction order in every attempt (bit-identical results)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0",
            **workload.extra_env}  # fmt: skip

"""MMSegmentation 1.2.2 in its own interpreter, for the benchmarks that compare with it.

MMSeg 1.2.2 needs torch / mmcv versions our venv does not have, so it runs from a separate venv
(`benchmarks/README.md` has the command that creates it at `DEFAULT_MMSEG_PYTHON`) in a subprocess
driven over pipes. The subprocess runs `PREAMBLE` followed by a benchmark's own script, which reads
its payload from `json.loads(sys.argv[1])`, defines its work as a dict of callables and ends with
`serve(work, info)`: `info` is answered first, then every line written to its stdin names one entry
of `work`, which runs there and is answered with its wall-clock and process CPU seconds (measured in
the subprocess) and its JSON-ready result. Answers are lines starting with "@@ "; anything else
MMSeg prints is skipped.

mmcv-lite has no compiled ops, so `PREAMBLE` registers a stand-in `mmcv.ops` module before mmseg is
imported; every name in it is a placeholder that raises if used.

`apply_allocator` gives both sides the same glibc allocator setting: this process by `mallopt`, the
subprocess by environment variables.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import subprocess
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pretrainlab.engine.malloc import keep_freed_memory

log = logging.getLogger("mmseg_driver")

DEFAULT_MMSEG_PYTHON = Path("/work/mmseg-venv/bin/python")
ALLOCATOR_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")

PREAMBLE = textwrap.dedent(
    """
    import json, sys, time, types

    def _placeholder(name):
        if name.startswith("__"):
            raise AttributeError(name)
        def unavailable(*args, **kwargs):
            raise RuntimeError(f"mmcv.ops stand-in: {name} needs compiled mmcv ops")
        return type(name, (), {"__init__": unavailable, "__call__": unavailable})

    ops = types.ModuleType("mmcv.ops")  # mmcv-lite ships no compiled ops; mmseg imports names from here
    ops.__getattr__ = _placeholder
    sys.modules["mmcv.ops"] = ops

    def serve(work, info):
        # Answer `info`, then run one entry of `work` per stdin line and answer its seconds and result.
        print("@@", json.dumps(info), flush=True)
        for command in sys.stdin:
            wall, cpu = time.perf_counter(), time.process_time()
            result = work[command.strip()]()
            reply = dict(wall=time.perf_counter() - wall, cpu=time.process_time() - cpu, result=result)
            print("@@", json.dumps(reply), flush=True)
    """
)


@dataclass(frozen=True)
class Reply:
    """One answered request: seconds measured inside the MMSeg process and the entry's result."""

    wall: float
    cpu: float
    result: Any  # whatever the entry returned, through JSON


class MMSegProcess:
    """A running MMSeg interpreter executing `PREAMBLE` + `script` (dedented) with `payload` as its argument."""

    def __init__(self, python: Path, script: str, payload: dict, env: dict[str, str] | None = None) -> None:
        self.errors = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 -- its stderr for its lifetime, shown if it fails
        self.process = subprocess.Popen(
            [str(python), "-c", PREAMBLE + textwrap.dedent(script), json.dumps(payload)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.errors,
            text=True,
            env=env,
        )
        self.info = self._read()

    def _read(self) -> dict:
        """Next answer line (marked "@@"; anything else mmseg prints is skipped)."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("@@ "):
                return json.loads(line[3:])
        self.process.wait(timeout=60)
        self.errors.seek(0)
        raise RuntimeError(self.errors.read().strip()[-2000:])

    def run(self, command: str) -> Reply:
        """Run the entry `command` of the script's work and wait for its answer."""
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        reply = self._read()
        return Reply(reply["wall"], reply["cpu"], reply["result"])

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=60)
        self.errors.close()


def mmseg_python(requested: Path | None) -> Path | None:
    """The interpreter to use: `requested`, else `DEFAULT_MMSEG_PYTHON` if it exists, else None."""
    return requested or (DEFAULT_MMSEG_PYTHON if DEFAULT_MMSEG_PYTHON.exists() else None)


def start_mmseg(
    python: Path | None, script: str, payload: dict, env: dict[str, str] | None = None
) -> MMSegProcess | None:
    """Start `script` under MMSeg's interpreter; None (with the reason logged) when it cannot be started or
    mmseg cannot be imported."""
    if python is None:
        log.info("no MMSegmentation interpreter (pass --mmseg-python or create %s)", DEFAULT_MMSEG_PYTHON)
        return None
    try:
        return MMSegProcess(python, script, payload, env)
    except (OSError, RuntimeError) as error:
        log.warning("MMSegmentation could not be imported or run with %s:\n%s", python, error)
        return None


def tuned_thresholds() -> dict[str, int]:
    """The engine's `keep_freed_memory` defaults, keyed by the glibc variable setting the same value."""
    parameters = inspect.signature(keep_freed_memory).parameters
    return {
        "MALLOC_MMAP_THRESHOLD_": parameters["mmap_threshold"].default,
        "MALLOC_TRIM_THRESHOLD_": parameters["trim_threshold"].default,
    }


def add_mmseg_arguments(parser: argparse.ArgumentParser) -> None:
    """`--mmseg-python` and `--allocator`, the options of every benchmark that runs MMSeg's side."""
    parser.add_argument("--mmseg-python", type=Path, default=None, help=f"default: {DEFAULT_MMSEG_PYTHON} if it exists")
    parser.add_argument(
        "--allocator",
        choices=("tuned", "default"),
        default="tuned",
        help="glibc allocator on both sides: 'tuned' = the training engine's keep_freed_memory thresholds "
        "(mallopt here, MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ for MMSeg), as the pretrainlab CLI runs; "
        "'default' = glibc's defaults",
    )


def apply_allocator(setting: str) -> dict[str, str]:
    """Apply `setting` ('tuned' or 'default') in this process; return the environment for the MMSeg subprocess."""
    env = {key: value for key, value in os.environ.items() if key not in ALLOCATOR_ENV}
    inherited = {key: os.environ[key] for key in ALLOCATOR_ENV if key in os.environ}
    if setting == "default":
        if inherited or "GLIBC_TUNABLES" in os.environ:
            log.warning(
                "allocator: glibc variables set in this environment apply to this process: %s",
                inherited or os.environ["GLIBC_TUNABLES"],
            )
        log.info("allocator: glibc defaults on both sides (%s removed for MMSeg)", " / ".join(ALLOCATOR_ENV))
        return env
    thresholds = tuned_thresholds()
    applied = keep_freed_memory(thresholds["MALLOC_MMAP_THRESHOLD_"], thresholds["MALLOC_TRIM_THRESHOLD_"])
    env.update({key: str(value) for key, value in thresholds.items()})
    log.info(
        "allocator: tuned on both sides -- ours: keep_freed_memory() (mallopt %s), MMSeg: %s",
        "applied" if applied else "NOT applied",
        " ".join(f"{key}={value}" for key, value in thresholds.items()),
    )
    return env

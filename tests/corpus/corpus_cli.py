"""Helpers of the bad-input corpus (not a conftest.py: that would shadow tests/conftest.py, which test
modules import as `conftest`): the CLI run in-process, what a clear error looks like, the fuzzing budget.

`PRETRAINLAB_SOAK=1` (the `make soak` run) raises the number of fuzzed examples of every property
from `DEFAULT_EXAMPLES` to `SOAK_EXAMPLES` and explores new random inputs on each run; the default
run replays the same derandomized examples every time, so `make test` stays fast and stable.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass

from hypothesis import HealthCheck, settings

from pretrainlab.cli import main

IS_SOAK = os.environ.get("PRETRAINLAB_SOAK") == "1"
DEFAULT_EXAMPLES = 40
SOAK_EXAMPLES = 2000

FUZZ = settings(
    max_examples=SOAK_EXAMPLES if IS_SOAK else DEFAULT_EXAMPLES,
    deadline=None,  # the first CLI call imports every component
    derandomize=not IS_SOAK,
    database=None,  # no .hypothesis/ folder in the working tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@dataclass(frozen=True)
class CliResult:
    """Exit status and captured output of one `pretrainlab` command run in-process."""

    status: int
    stdout: str
    stderr: str


def run_cli(argv: Sequence[str]) -> CliResult:
    """`pretrainlab.cli.main(argv)` with stdout / stderr captured; argparse's SystemExit becomes the status."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(list(argv))
        except SystemExit as exit_:
            status = exit_.code if isinstance(exit_.code, int) else 1
    return CliResult(status, out.getvalue(), err.getvalue())


def error_lines(result: CliResult) -> list[str]:
    """The lines of a refused command's stderr, after checking it is a clear error: status 2, no traceback,
    the first line `error: ...` and none of pydantic's multi-line report."""
    assert result.status == 2, f"expected exit status 2, got {result.status}; stderr: {result.stderr!r}"
    assert "Traceback" not in result.stderr, result.stderr
    assert "errors.pydantic.dev" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines and lines[0].startswith("error: "), result.stderr
    assert all(line.strip() for line in lines), result.stderr
    return lines


def one_error_line(result: CliResult, *expected: str) -> str:
    """The single line of a clear error (see `error_lines`), which holds every string of `expected`."""
    lines = error_lines(result)
    assert len(lines) == 1, f"expected one line, got {len(lines)}: {result.stderr!r}"
    for text in expected:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    return lines[0]


def the_error_line(result: CliResult, *expected: str) -> str:
    """Like `one_error_line` for a command that got as far as training: status 2, no traceback, exactly one
    `error: ` line holding every string of `expected` (Lightning's warnings may come before it)."""
    assert result.status == 2, f"expected exit status 2, got {result.status}; stderr: {result.stderr!r}"
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    for text in expected:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    return lines[0]

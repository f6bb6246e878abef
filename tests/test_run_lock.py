"""One writer per run directory: a second process is refused while a live one holds `<run>/.lock`, a lock
left by a dead process is taken over with a warning, and the ranks of a multi-process run share rank 0's."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import REPO_ROOT

from pretrainlab.run_lock import LOCK_NAME, RunLockedError, hold_run_lock

HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from pretrainlab.run_lock import hold_run_lock

    with hold_run_lock(Path(sys.argv[1])):
        print("locked", flush=True)
        sys.stdin.readline()  # holds the lock until the test closes stdin
    """
)


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the lock of `tmp_path / "run"` until the test ends (or kills it)."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "run")], cwd=REPO_ROOT, text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    assert process.stdout is not None and process.stdout.readline().strip() == "locked"
    yield process
    if process.poll() is None:
        process.communicate("\n", timeout=60)


def lock_record(run: Path) -> dict[str, object]:
    return json.loads((run / LOCK_NAME).read_text())


def test_second_process_is_refused_naming_the_holder(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    run = tmp_path / "run"
    assert lock_record(run)["pid"] == holder.pid
    with pytest.raises(RunLockedError) as refused, hold_run_lock(run):
        pytest.fail("entered a run directory another process holds")
    message = str(refused.value)
    assert message.startswith(f"{run.resolve()} is in use: PID {holder.pid} on host {socket.gethostname()} (started ")
    assert "Wait for it to finish or stop it" in message and "\n" not in message
    assert lock_record(run)["pid"] == holder.pid  # the refused process leaves the holder's lock alone

    holder.communicate("\n", timeout=60)
    assert holder.returncode == 0 and not (run / LOCK_NAME).exists()  # released on a normal exit
    with hold_run_lock(run):
        assert lock_record(run)["pid"] == os.getpid()


def test_cli_refuses_a_locked_run_with_one_line(
    tmp_path: Path, holder: subprocess.Popen[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from pretrainlab.cli import main  # not at the top: the gloo test's processes import this module

    argv = ["-q", "pretrain", str(REPO_ROOT / "configs" / "quickstart.yaml"), "--resume", "name=run",
            f"output_root={tmp_path}"]  # fmt: skip
    assert main(argv) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith(f"error: {(tmp_path / 'run').resolve()} is in use: PID {holder.pid}")
    assert not (tmp_path / "run" / "config.yaml").exists()  # refused before anything was written


def test_lock_of_a_killed_holder_is_taken_over_with_a_warning(
    tmp_path: Path, holder: subprocess.Popen[str], caplog: pytest.LogCaptureFixture
) -> None:
    run = tmp_path / "run"
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    assert lock_record(run)["pid"] == holder.pid  # a SIGKILL leaves the file: the stale case
    with caplog.at_level(logging.WARNING, logger="pretrainlab.run_lock"), hold_run_lock(run):
        assert lock_record(run)["pid"] == os.getpid()
    [warning] = caplog.records
    assert f"taking over the stale lock of PID {holder.pid} on host {socket.gethostname()}" in warning.getMessage()
    assert not (run / LOCK_NAME).exists()


def test_lock_naming_a_dead_pid_is_taken_over_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    exited = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                            check=True)  # fmt: skip
    dead_pid = int(exited.stdout)
    with pytest.raises(ProcessLookupError):
        os.kill(dead_pid, 0)
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).write_text(json.dumps({"pid": dead_pid, "host": socket.gethostname(), "started": "2024-05-01"}))
    with caplog.at_level(logging.WARNING, logger="pretrainlab.run_lock"), hold_run_lock(run):
        assert lock_record(run)["pid"] == os.getpid()
    [warning] = caplog.records
    assert f"stale lock of PID {dead_pid} " in warning.getMessage() and "(started 2024-05-01)" in warning.getMessage()


def test_lock_is_reentrant_and_released_on_an_exception(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = tmp_path / "run"
    with pytest.raises(KeyError), hold_run_lock(run):
        with hold_run_lock(run):  # a study's pretraining phase opens the run its study holds
            pass
        assert lock_record(run)["pid"] == os.getpid()  # the inner block does not release it
        raise KeyError("a failing phase")
    assert not (run / LOCK_NAME).exists()
    with caplog.at_level(logging.WARNING, logger="pretrainlab.run_lock"), hold_run_lock(run):
        pass
    assert not caplog.records  # released cleanly: nothing stale to take over


def test_other_ranks_of_a_launcher_do_not_lock(
    tmp_path: Path, holder: subprocess.Popen[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process Lightning's launcher, torchrun or SLURM started as rank 1 enters while rank 0 holds the lock."""
    for variable in ("LOCAL_RANK", "RANK", "SLURM_PROCID"):
        with monkeypatch.context() as environment:
            environment.setenv(variable, "1")
            with hold_run_lock(tmp_path / "run"):
                assert lock_record(tmp_path / "run")["pid"] == holder.pid
    with pytest.raises(RunLockedError), hold_run_lock(tmp_path / "run"):  # as rank 0 is
        pass


def _rank(rank: int, init_file: str, run: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=2, timeout=timedelta(seconds=60)
    )  # a failing rank does not leave the other waiting
    try:
        pids: list[int | None] = [None, None]
        dist.all_gather_object(pids, os.getpid())
        if rank == 0:
            with hold_run_lock(Path(run)):
                dist.barrier()  # rank 1 enters the run while rank 0 holds it
                dist.barrier()
        else:
            dist.barrier()
            with hold_run_lock(Path(run)):
                assert lock_record(Path(run))["pid"] == pids[0]
            dist.barrier()
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_run_does_not_refuse_itself(tmp_path: Path) -> None:
    mp.spawn(_rank, args=(str(tmp_path / "rendezvous"), str(tmp_path / "run")), nprocs=2, join=True)
    assert not (tmp_path / "run" / LOCK_NAME).exists()

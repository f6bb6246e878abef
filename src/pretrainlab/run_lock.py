"""One writer per run directory: `<run>/.lock`, held by the process that writes the run.

A second process opening the same run directory for writing is refused with `RunLockedError`, one
line naming the directory, the holder (PID, host, start time) and how to proceed. The lock is held
for a `with hold_run_lock(run_dir):` block and released when the block ends, by return or by
exception. A process killed inside it (SIGKILL, the OOM killer, a lost node) leaves `.lock` behind:
the next process takes that stale lock over, with a warning naming the dead PID.

Mechanism: `fcntl.flock` on `<run>/.lock`, kept while the file is open, the holder recorded in it as
JSON (`pid`, `host`, `started`). The kernel drops a flock when its process dies, however it dies, so
a lock file nobody holds is stale by definition and two processes cannot both take it over (the
flock decides). With `O_CREAT | O_EXCL` the file's existence would be the lock: as atomic, but a
stale file could only be recognised by "is its PID alive", which a reused PID fools and a holder on
another machine makes unanswerable, and replacing a stale file would race. flock works on local file
systems (ext4, xfs, btrfs, APFS). On NFS, Linux emulates it with byte-range locks through the NFS
lock manager: effective between machines with NFSv4 (or v3 with lockd), but local to each machine
when mounted with `nolock` or `local_lock=flock`. Lustre without `-o flock` refuses flock; the run
then goes on unlocked, with a warning.

Which commands lock (only rank 0 of a multi-process run: the other ranks write no run files, and must
not refuse because rank 0 holds the lock):
- `pretrain`, `study` (hence each sweep variant, each search trial and the W2 online runs, which are
  study phases), `evaluate knn|linear|seg`: they write checkpoints, metrics, phase results, eval files
  and reports into the run directory.
- `search` also locks its study folder: on start it marks RUNNING trials as failed and retries them,
  which is right only when no other search process is running them.
- Not `analyze`: it writes only its own files (analysis/<name>.md, plots/<name>.png, and report.md of a
  study that has finished) and reads the checkpoint, which is replaced atomically, so it may run beside
  the run's writer (attention maps mid-training). Nor `export` and `report`: they write elsewhere.

Within one process the lock is re-entrant (a study's pretraining phase opens the run the study holds).
Forked children (DataLoader workers) close their copy of the lock file, so the workers of a killed run
do not keep its lock while they notice their parent is gone.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from pretrainlab.distributed import is_rank_zero

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
# flock errors of file systems that cannot lock (Lustre without -o flock, some FUSE mounts)
_LOCKING_UNSUPPORTED = frozenset({errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL})
_HOLDER_WAIT_S, _HOLDER_POLL_S = 1.0, 0.05  # how long a refused process waits for the holder to record itself

# Folders locked by this process (resolved path -> the open lock file, or None on a file system without
# locks). The `hold_run_lock` call that added an entry removes it.
_HELD: dict[Path, int | None] = {}


class RunLockedError(RuntimeError):
    """Another live process is writing the run directory."""


@dataclass(frozen=True)
class LockHolder:
    """The process recorded in a lock file."""

    pid: int
    host: str
    started: str  # local time with its UTC offset, ISO 8601 to the second

    @classmethod
    def this_process(cls) -> LockHolder:
        return cls(os.getpid(), socket.gethostname(), datetime.now().astimezone().isoformat(timespec="seconds"))

    @classmethod
    def parse(cls, text: str) -> LockHolder | None:
        """The holder recorded in a lock file's text; None when it is not a holder record."""
        try:
            data = json.loads(text)
            return cls(int(data["pid"]), str(data["host"]), str(data["started"]))
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        return f"PID {self.pid} on host {self.host} (started {self.started})"


@contextmanager
def hold_run_lock(folder: Path) -> Iterator[None]:
    """Hold `<folder>/.lock` (creating `folder`) for the block; see the module docstring.

    A no-op in processes other than rank 0, and in a process that already holds it.

    Raises:
        RunLockedError: another live process holds the lock.
    """
    key = Path(folder).resolve()
    if key in _HELD or not is_rank_zero():
        yield
        return
    _HELD[key] = _acquire(key)
    try:
        yield
    finally:
        if key in _HELD:  # a forked child that leaves the block has dropped its copy already
            _release(key / LOCK_NAME, _HELD.pop(key))


def _acquire(folder: Path) -> int | None:
    """Create and flock `<folder>/.lock` and record this process in it; the returned descriptor holds the
    lock (None when the file system cannot lock)."""
    path = folder / LOCK_NAME
    folder.mkdir(parents=True, exist_ok=True)
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise RunLockedError(_locked_message(folder, _wait_for_holder(path))) from None
        except OSError as error:
            os.close(descriptor)
            if error.errno not in _LOCKING_UNSUPPORTED:
                raise
            log.warning("%s: the file system cannot lock %s (%s); nothing stops a second process from writing "
                        "this run", folder, path, error.strerror)  # fmt: skip
            return None
        if _is_current(descriptor, path):
            break
        os.close(descriptor)  # its holder released and removed it between our open and flock: lock the new file
    stale = os.pread(descriptor, 4096, 0).decode(errors="replace")
    if stale.strip():
        holder = LockHolder.parse(stale)
        log.warning("%s: taking over the stale lock of %s, which ended without releasing it (killed?)", folder,
                    holder.describe() if holder else f"an unknown process ({path} is not a lock record)")  # fmt: skip
    record = json.dumps(asdict(LockHolder.this_process())).encode()
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, record, 0)
    os.fsync(descriptor)  # other machines of a network file system read the record
    return descriptor


def _release(path: Path, descriptor: int | None) -> None:
    """Remove the lock file, then close it (which drops the flock); removing it first is what `_is_current`
    checks for. A file that is no longer ours (deleted by hand and locked again) is left alone."""
    if descriptor is None:
        return
    try:
        if _is_current(descriptor, path):
            path.unlink()
    finally:
        os.close(descriptor)


def _is_current(descriptor: int, path: Path) -> bool:
    """Whether the open file `descriptor` is still the file at `path`."""
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(descriptor)
    return (opened.st_dev, opened.st_ino) == (current.st_dev, current.st_ino)


def _wait_for_holder(path: Path) -> LockHolder | None:
    """The holder recorded in `path`. A holder records itself right after locking, so an empty file is
    read again for up to `_HOLDER_WAIT_S`; None if it stays empty or unreadable."""
    deadline = time.monotonic() + _HOLDER_WAIT_S
    while True:
        try:
            text = path.read_text(errors="replace")
        except FileNotFoundError:
            return None  # released just now
        if text.strip() or time.monotonic() > deadline:
            return LockHolder.parse(text)
        time.sleep(_HOLDER_POLL_S)


def _locked_message(folder: Path, holder: LockHolder | None) -> str:
    who = holder.describe() if holder else "another process (it has not recorded itself)"
    return (
        f"{folder} is in use: {who} is writing it, and a run directory has one writer at a time. Wait for it "
        f"to finish or stop it, or choose another run name; if it has ended and this persists (a network file "
        f"system), delete {folder / LOCK_NAME}"
    )


def _drop_in_child() -> None:
    """In a forked child: close the inherited lock files, so that the lock lives only as long as its holder."""
    for descriptor in _HELD.values():
        if descriptor is not None:
            os.close(descriptor)
    _HELD.clear()


os.register_at_fork(after_in_child=_drop_in_child)

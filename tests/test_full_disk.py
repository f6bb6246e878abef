"""A full disk while writing run files: the temporary file is removed, the previous version stays intact and
loadable, and the run stops with one line naming the file, the error and the kept checkpoint's step."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import IO, Any

import pytest
import torch
from conftest import REPO_ROOT, tiny_run_overrides

from pretrainlab.run_dir import (
    FileWriteError,
    RunDir,
    load_checkpoint,
    read_jsonl,
    save_checkpoint,
    truncate_jsonl,
)

REAL_SAVE = torch.save
REAL_OPEN = Path.open


def disk_full() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def lightning_like_checkpoint(epoch: int, global_step: int) -> dict[str, Any]:
    return {"epoch": epoch, "global_step": global_step, "state_dict": {"w": torch.randn(64, 64)}}


def save_part_then_fill(obj: object, file: IO[bytes], *args: object, **kwargs: object) -> None:
    """torch.save on a disk that fills halfway through: half of the bytes are written, then ENOSPC."""
    buffer = io.BytesIO()
    REAL_SAVE(obj, buffer, *args, **kwargs)
    file.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    raise disk_full()


class FillingFile(io.BufferedWriter):
    """A file on a disk with `budget` bytes free: a write past it writes what fits, then raises ENOSPC."""

    def __init__(self, raw: io.RawIOBase, budget: int) -> None:
        super().__init__(raw)
        self.budget = budget

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        data = bytes(data)
        if len(data) > self.budget:
            super().write(data[: self.budget])
            self.budget = 0
            raise disk_full()
        self.budget -= len(data)
        return super().write(data)


def open_filling_temporaries(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> IO[Any]:
    """Path.open where temporary files (`*.tmp`) live on a disk with 4 kB free."""
    if self.name.endswith(".tmp") and "w" in mode:
        return FillingFile(io.FileIO(self, "w"), budget=4096)
    return REAL_OPEN(self, mode, *args, **kwargs)


def fsync_on_a_full_disk(descriptor: int) -> None:
    """fsync reporting ENOSPC, as a network file system does when the data reaches the server."""
    raise disk_full()


@pytest.mark.parametrize("failure", ["torch.save", "file write", "fsync"])
def test_full_disk_while_saving_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    path = tmp_path / "checkpoints" / "last.ckpt"
    save_checkpoint(lightning_like_checkpoint(epoch=1, global_step=12), path)
    before = path.read_bytes()
    if failure == "torch.save":
        monkeypatch.setattr(torch, "save", save_part_then_fill)
    elif failure == "file write":
        monkeypatch.setattr(Path, "open", open_filling_temporaries)
    else:
        monkeypatch.setattr(os, "fsync", fsync_on_a_full_disk)

    with pytest.raises(FileWriteError) as failed:
        save_checkpoint(lightning_like_checkpoint(epoch=2, global_step=18), path)
    assert str(failed.value) == (
        f"could not write checkpoint {path}: No space left on device (ENOSPC); the previous checkpoint "
        "(after epoch 2, step 12) is kept and a resume continues from it"
    )
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert load_checkpoint(path)["global_step"] == 12
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # the temporary file is removed


def test_full_disk_on_the_first_checkpoint_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.ckpt"
    monkeypatch.setattr(torch, "save", save_part_then_fill)
    with pytest.raises(FileWriteError, match=r"\(ENOSPC\); there is no earlier checkpoint$"):
        save_checkpoint(lightning_like_checkpoint(epoch=0, global_step=6), path)
    assert list(tmp_path.iterdir()) == []


def test_full_disk_while_writing_json_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = RunDir(tmp_path / "run")
    run.write_summary({"knn_top1": 50.0})
    monkeypatch.setattr(Path, "open", open_filling_temporaries)
    with pytest.raises(FileWriteError, match=r"summary.json: No space left on device \(ENOSPC\)"):
        run.write_summary({"knn_top1": 60.0, "filler": "x" * 10_000})
    monkeypatch.undo()
    assert run.read_summary() == {"knn_top1": 50.0}
    assert sorted(p.name for p in run.path.iterdir()) == ["summary.json"]


def test_a_torn_last_metrics_line_is_not_read(tmp_path: Path) -> None:
    """A kill or a full disk in the middle of an append leaves a last line without its newline."""
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0, "loss": 2.0}\n{"step": 5, "loss": 1.5}\n{"step": 10, "lo')
    assert read_jsonl(path) == [{"step": 0, "loss": 2.0}, {"step": 5, "loss": 1.5}]
    truncate_jsonl(path, last_step=10)
    assert path.read_text() == '{"step": 0, "loss": 2.0}\n{"step": 5, "loss": 1.5}\n'


DRIVER = textwrap.dedent(
    """
    import errno, io, os, sys
    import torch
    from pretrainlab.cli import main

    real_save, saves = torch.save, []

    def save(obj, file, *args, **kwargs):
        # the second checkpoint meets a full disk halfway through
        if str(getattr(file, "name", "")).endswith("last.ckpt.tmp"):
            saves.append(obj["global_step"])
            if len(saves) == 2:
                buffer = io.BytesIO()
                real_save(obj, buffer, *args, **kwargs)
                file.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, file, *args, **kwargs)

    torch.save = save
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.mark.slow
def test_full_disk_stops_a_pretraining_run_with_one_line(tiny_synthetic: Path, tmp_path: Path) -> None:
    overrides = tiny_run_overrides(tiny_synthetic, tmp_path, name="full", **{"eval.knn.every_n_epochs": 0})
    config = REPO_ROOT / "configs" / "quickstart.yaml"
    result = subprocess.run([sys.executable, "-c", DRIVER, "-q", "pretrain", str(config), *overrides],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    run = RunDir(tmp_path / "full")
    assert result.returncode == 1, result.stderr[-3000:]
    # the error is the last line and the only one of its own; the lines before it are Lightning's start-up
    # messages, which its own stderr handler prints even under -q
    *_, last = result.stderr.strip().splitlines()
    assert last == (
        f"error: could not write checkpoint {run.checkpoint}: No space left on device (ENOSPC); the previous "
        "checkpoint (after epoch 1, step 6) is kept and a resume continues from it"
    )
    assert "Traceback" not in result.stderr and result.stderr.count(str(run.checkpoint)) == 1
    assert load_checkpoint(run.checkpoint)["global_step"] == 6  # 96 images / batch 16: 6 steps per epoch
    assert sorted(p.name for p in run.checkpoint.parent.iterdir()) == ["last.ckpt"]
    assert not (run.path / ".lock").exists()  # released on the way out

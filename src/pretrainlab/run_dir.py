"""The run directory: one module owns its layout and reads / writes every file in it.

    runs/<name>/config.yaml                        resolved config
                .lock                              the process writing the run (run_lock.py), while it runs
                pretrain/metrics.jsonl             one JSON object per log step / evaluation (pretraining)
                pretrain/checkpoints/last.ckpt     pretraining state, written atomically at every epoch end
                pretrain/logs/                     TensorBoard + CSV
                pretrain/<NN>_to_epoch_<k>/        a study's pretraining phase: result.json
                eval/epoch_<k>/<kind>/             a study's evaluation of the weights after k epochs (0 =
                                                   random init only): result.json, its own files (eval json,
                                                   metrics, plots)
                adapt/source.pt  adapt/checkpoints/last.ckpt  adapt/<NN>_source/  adapt/<NN>_step<k>_<domain>/
                                                   online adaptation (W2): the source model, the adaptation
                                                   state, one folder per phase
                eval/domains.csv, eval/domains.md  its domains x steps mIoU table
                eval/*.json                        evaluations run by hand (`pretrainlab evaluate ...`)
                plots/*.png  report.md  summary.json

A phase's `result.json` is written last: the phase is finished once it exists.

Engine, study, sweep and report go through `RunDir`; reports never import the engine.
Checkpoints are read with `weights_only=True`: a file holding anything but tensors and
plain types (e.g. a pickled callable) is refused with one clear line.

Whole files (checkpoints, JSON, config.yaml, text) are written to `<name>.tmp`, fsynced and renamed, so a
process killed while writing leaves the previous version. A write that fails (a full disk: ENOSPC)
removes the temporary file and raises `FileWriteError`, one line naming the file and the error. A JSONL
line torn by a kill or a full disk (the last line, without its newline) is not read.
"""

from __future__ import annotations

import errno
import json
import math
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch
import yaml

SUMMARY = "summary.json"
RESULT = "result.json"
MID_EPOCH = "mid_epoch"  # checkpoint key: True when written within an epoch (not at its end)


class UnsafeCheckpointError(ValueError):
    """A checkpoint that holds code, or is not a torch checkpoint at all."""


class FileWriteError(RuntimeError):
    """A file could not be written (a full disk, a quota, an I/O error): its temporary file is removed and
    its previous version, if any, is intact."""


def _describe_os_error(error: OSError) -> str:
    """`No space left on device (ENOSPC)`; the text of an OSError without an errno."""
    if error.errno is None:
        return str(error)
    return f"{error.strerror or os.strerror(error.errno)} ({errno.errorcode.get(error.errno, error.errno)})"


def _write_atomically(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """`write` the contents into `<path>.tmp`, fsync, rename it to `path`. On any failure (or interruption)
    the temporary file is removed and `path` keeps its previous contents."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with temporary.open("wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """Write `text` atomically (temporary file, fsync, rename).

    Raises:
        FileWriteError: the write failed; `path` keeps its previous version.
    """
    try:
        _write_atomically(path, lambda file: file.write(text.encode()))
    except OSError as error:
        message = f"could not write {path}: {_describe_os_error(error)}; its previous version, if any, is intact"
        raise FileWriteError(message) from error


def write_json(path: Path, data: Any) -> None:
    """Write `data` as indented JSON atomically (see `write_text`)."""
    write_text(path, json.dumps(data, indent=2, default=_plain))


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _plain(value: Any) -> Any:
    return float(value) if hasattr(value, "__float__") else str(value)


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line; non-finite floats become null.

    Raises:
        FileWriteError: the append failed (a torn last line is skipped by the readers).
    """
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as file:
            file.write(json.dumps(clean) + "\n")
    except OSError as error:
        raise FileWriteError(f"could not append to {path}: {_describe_os_error(error)}") from error


def _jsonl_lines(path: Path) -> list[str]:
    """The complete lines of a JSONL file: a last line without its newline (torn by a kill or a full disk
    while appending) is dropped unless it parses."""
    text = path.read_text()
    lines = text.splitlines()
    if lines and not text.endswith("\n"):
        try:
            json.loads(lines[-1])
        except json.JSONDecodeError:
            lines.pop()
    return [line for line in lines if line.strip()]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in _jsonl_lines(path)]


def truncate_jsonl(path: Path, last_step: int) -> None:
    """Drop the lines logged after `last_step` (history past a checkpoint a run resumes from), and a torn
    last line; the file is replaced atomically."""
    if path.exists():
        kept = [line for line in _jsonl_lines(path) if json.loads(line).get("step", 0) <= last_step]
        write_text(path, "".join(line + "\n" for line in kept))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint's contents, read with `weights_only=True` (tensors and plain types only).

    Raises:
        UnsafeCheckpointError: the file holds code or other objects (it is not unpickled), or is not
            a torch checkpoint.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise UnsafeCheckpointError(
            f"{path}: refused: the checkpoint holds more than tensors and plain types ({first_line.strip()}); "
            "it was not loaded. Only load checkpoints you trust, and convert them to plain state dicts"
        ) from None
    except (RuntimeError, EOFError, OSError) as error:
        raise UnsafeCheckpointError(f"{path}: not a readable torch checkpoint: {error}") from None


def save_checkpoint(checkpoint: dict[str, Any], path: Path) -> None:
    """torch.save to a temporary file, fsync, then rename: a killed write keeps the old file intact.

    Raises:
        FileWriteError: the write failed (a full disk: ENOSPC). The temporary file is removed and the
            previous checkpoint is intact; the message names the file, the error and the kept checkpoint's
            epoch and step.
    """
    try:
        _write_atomically(path, lambda file: torch.save(checkpoint, file))
    except (OSError, RuntimeError) as error:
        failure = _os_error_behind(error)
        if failure is None:
            raise
        message = f"could not write checkpoint {path}: {_describe_os_error(failure)}; {_kept(path)}"
        raise FileWriteError(message) from error


def _os_error_behind(error: BaseException) -> OSError | None:
    """The OSError of a failed write: `error` itself, or the one it was raised while handling (torch.save
    into a file object reports a failed write as a RuntimeError from closing its archive); None if none."""
    seen: BaseException | None = error
    while seen is not None and not isinstance(seen, OSError):
        seen = seen.__cause__ or seen.__context__
    return seen


def _kept(path: Path) -> str:
    """What a resume finds after a failed write of `path`: the previous checkpoint, with its epoch and step
    when it is a Lightning one (read memory-mapped: only those two values are loaded)."""
    if not path.is_file():
        return "there is no earlier checkpoint"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        # Lightning stores the 0-based index of the epoch that ended, or that a mid-epoch checkpoint is within
        where = "within" if state.get(MID_EPOCH, False) else "after"
        position = f" ({where} epoch {int(state['epoch']) + 1}, step {int(state['global_step'])})"
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, KeyError, TypeError, ValueError):
        position = ""
    return f"the previous checkpoint{position} is kept and a resume continues from it"


@dataclass(frozen=True)
class Phase:
    """The folder `folder` (relative to the run directory `root`) of study phase `index` of kind `kind`."""

    index: int
    kind: str
    root: Path
    folder: str

    @property
    def id(self) -> str:
        return f"{self.index:02d}_{self.kind}"

    @property
    def dir(self) -> Path:
        return self.root / self.folder

    @property
    def result_path(self) -> Path:
        return self.dir / RESULT

    def is_done(self) -> bool:
        return self.result_path.is_file()

    def read_result(self) -> dict[str, Any]:
        return read_json(self.result_path)

    def write_result(self, result: dict[str, Any]) -> None:
        write_json(self.result_path, {"phase": self.id, "kind": self.kind, "dir": self.folder, **result})


@dataclass(frozen=True)
class RunDir:
    """Paths and readers / writers of one run directory."""

    path: Path

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def checkpoint(self) -> Path:
        return self.pretrain_dir / "checkpoints" / "last.ckpt"

    @property
    def pretrain_dir(self) -> Path:
        return self.path / "pretrain"

    @property
    def adapt_dir(self) -> Path:
        """Online adaptation (W2): source.pt, checkpoints/last.ckpt, metrics.jsonl, logs/, one folder per phase."""
        return self.path / "adapt"

    @property
    def metrics(self) -> Path:
        return self.pretrain_dir / "metrics.jsonl"

    @property
    def logs(self) -> Path:
        return self.pretrain_dir / "logs"

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    @property
    def analysis_dir(self) -> Path:
        """`pretrainlab analyze` output: analysis/<name>.md sections (their figures in plots/), landscape grids."""
        return self.path / "analysis"

    @property
    def eval_dir(self) -> Path:
        return self.path / "eval"

    @property
    def report(self) -> Path:
        return self.path / "report.md"

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY

    def exists(self) -> bool:
        return self.config_path.is_file()

    def read_config_data(self) -> dict[str, Any]:
        """The saved config as a mapping (validated by `config.loading.load_run_config`)."""
        if not self.config_path.is_file():
            raise FileNotFoundError(f"{self.path} is not a run directory: {self.config_path} not found")
        return yaml.safe_load(self.config_path.read_text()) or {}

    def write_config(self, text: str) -> None:
        write_text(self.config_path, text)

    def load_checkpoint(self) -> dict[str, Any]:
        if not self.checkpoint.is_file():
            raise FileNotFoundError(f"{self.path}: no checkpoint at {self.checkpoint}; has the run started?")
        return load_checkpoint(self.checkpoint)

    def checkpoint_epoch(self) -> int:
        """Epochs completed by the pretraining checkpoint (0 without one)."""
        if not self.checkpoint.is_file():
            return 0
        checkpoint = load_checkpoint(self.checkpoint)
        # Lightning stores the 0-based index of the epoch in progress; a mid-epoch checkpoint has not completed it
        return int(checkpoint["epoch"]) + (0 if checkpoint.get(MID_EPOCH, False) else 1)

    def read_metrics(self) -> list[dict[str, Any]]:
        return read_jsonl(self.metrics)

    def phase(self, index: int, kind: str, folder: str) -> Phase:
        return Phase(index, kind, self.path, folder)

    def phase_results(self) -> list[dict[str, Any]]:
        """Results of every finished phase, in phase order."""
        paths = [*self.pretrain_dir.glob(f"*/{RESULT}"), *self.eval_dir.glob(f"epoch_*/*/{RESULT}"),
                 *self.adapt_dir.glob(f"*/{RESULT}")]  # fmt: skip
        return sorted((read_json(path) for path in paths), key=lambda result: result["phase"])

    def last_phase_dir(self, kind: str) -> Path | None:
        """The folder of the last finished phase of `kind`, or None."""
        results = [r for r in self.phase_results() if r["kind"] == kind]
        return self.path / results[-1]["dir"] if results else None

    def write_eval(self, name: str, data: dict[str, Any]) -> Path:
        path = self.eval_dir / f"{name}.json"
        write_json(path, data)
        return path

    def read_eval(self) -> dict[str, Any]:
        """eval/*.json by file stem (unreadable files are left out)."""
        if not self.eval_dir.is_dir():
            return {}
        found = {}
        for path in sorted(self.eval_dir.glob("*.json")):
            try:
                found[path.stem] = read_json(path)
            except (OSError, json.JSONDecodeError):
                continue
        return found

    def has_summary(self) -> bool:
        return self.summary_path.is_file()

    def read_summary(self) -> dict[str, Any]:
        return read_json(self.summary_path)

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json(self.summary_path, summary)

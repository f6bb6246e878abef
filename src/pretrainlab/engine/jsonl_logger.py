"""A Lightning logger writing a JSONL metrics file: one JSON object per log step or evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.loggers.logger import Logger, rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from pretrainlab.run_dir import append_jsonl, truncate_jsonl


class JsonlLogger(Logger):
    """Appends `{"step": ..., **metrics}` lines. On resume, lines past `resume_step` are dropped,
    so a killed-and-resumed run leaves one consistent history."""

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        super().__init__()
        self.path = path
        if resume_step is not None and rank_zero_only.rank == 0:
            truncate_jsonl(path, resume_step)

    @property
    def name(self) -> str:
        return "jsonl"

    @property
    def version(self) -> str:
        return "0"

    @property
    @rank_zero_experiment
    def experiment(self) -> None:
        return None

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Hyperparameters live in config.yaml beside this file."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        append_jsonl(self.path, {"step": step, **{k: _plain(v) for k, v in metrics.items()}})


def _plain(value: Any) -> Any:
    return float(value) if hasattr(value, "__float__") else value

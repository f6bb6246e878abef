"""What every `pretrainlab analyze <name> --run DIR` shares: loading the run, picking val images, where
the figure and the report section go, and a figure that is always closed.

    <run>/plots/<name>.png       the figure
    <run>/analysis/<name>.md     its report section: title, options used, the figure, a few numbers; links
                                 are relative to the file (../plots/), and the run's report.md includes it

An analysis module exposes `add_cli_arguments(parser)` and `run_cli(args) -> int`; `cli.py` registers
each as `pretrainlab analyze <name>`.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor

from pretrainlab.report.run_report import refresh_run_report
from pretrainlab.run_dir import RunDir, write_text

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from torch.utils.data import Dataset

    from pretrainlab.config.schema import Config

WEIGHTS = ("pretrained", "random_init")


def figure_path(run_dir: Path, name: str) -> Path:
    """<run>/plots/<name>.png."""
    return RunDir(run_dir).plots / f"{name}.png"


def section_path(run_dir: Path, name: str) -> Path:
    """<run>/analysis/<name>.md."""
    return RunDir(run_dir).analysis_dir / f"{name}.md"


@dataclass(frozen=True)
class AnalysisSection:
    """One analysis' report section: `## title`, the options used, its figure and a table of numbers."""

    name: str  # stem of plots/<name>.png and analysis/<name>.md
    title: str
    options: dict[str, object]
    numbers: dict[str, str] = field(default_factory=dict)  # formatted value by quantity

    def markdown(self) -> str:
        options = ", ".join(f"{key.replace('_', ' ')} `{value}`" for key, value in self.options.items())
        lines = [f"## {self.title}", "", f"Options: {options}.", "", f"![{self.title}](../plots/{self.name}.png)", ""]
        if self.numbers:
            lines += ["| quantity | value |", "|---|---:|"]
            lines += [f"| {quantity} | {value} |" for quantity, value in self.numbers.items()]
            lines.append("")
        return "\n".join(lines)

    def write(self, run_dir: Path) -> Path:
        """Write the section to <run>/analysis/<name>.md (replacing an earlier one) and return its path."""
        path = section_path(run_dir, self.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, self.markdown())
        refresh_run_report(run_dir)
        return path


@contextmanager
def saved_figure(path: Path, nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float],
                 dpi: int = 110) -> Iterator[tuple[Figure, np.ndarray]]:  # fmt: skip
    """A figure with an (nrows, ncols) array of axes, saved to `path` when the block ends normally and
    closed whatever happens: pyplot keeps every open figure (and its memory) until the process ends."""
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False)
    try:
        yield fig, axes
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)


def show_image(ax: Axes, image: np.ndarray, heat: np.ndarray | None = None, title: str = "") -> None:
    """Draw an (H, W, 3) image in [0, 1] with an optional (H, W) heat map in [0, 1] over it."""
    ax.imshow(image)
    if heat is not None:
        ax.imshow(heat, cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def display_images(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(B, C, H, W) normalised images -> (B, H, W, 3) RGB in [0, 1]; one channel is shown grey, four
    channels as their first three."""
    mean_t = torch.tensor(mean, dtype=torch.float32)[:, None, None]  # (C, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32)[:, None, None]
    pixels = images.detach().float().cpu() * std_t + mean_t  # (B, C, H, W)
    if pixels.shape[1] == 1:
        pixels = pixels.expand(-1, 3, -1, -1)
    return pixels[:, :3].clamp(0.0, 1.0).permute(0, 2, 3, 1).numpy()


def evenly_spaced(total: int, count: int) -> list[int]:
    """`count` distinct indices spread evenly over range(total), first and last included (all when
    count >= total)."""
    if count >= total:
        return list(range(total))
    return [int(i) for i in np.linspace(0, total - 1, count).round()]


def val_examples(dataset: Dataset, count: int) -> tuple[Tensor, Tensor]:
    """`count` evenly spaced val images (B, C, H, W), normalised as the model sees them, and labels (B,)."""
    samples = [dataset[index] for index in evenly_spaced(len(dataset), count)]
    return torch.stack([sample[0] for sample in samples]), torch.tensor([int(sample[1]) for sample in samples])


def prepare_run(run_dir: Path) -> Config:
    """The run's saved config, with its dataset generated when it is synthetic and missing."""
    from pretrainlab.data.loaders import ensure_dataset
    from pretrainlab.study.run import load_run_config

    config = load_run_config(run_dir)
    ensure_dataset(config)
    return config


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_run_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", type=Path, required=True,
                        help="run directory (holds config.yaml and pretrain/checkpoints/)")  # fmt: skip


def add_weights_argument(parser: argparse.ArgumentParser, choices: Sequence[str] = WEIGHTS,
                         default: str = "pretrained") -> None:  # fmt: skip
    parser.add_argument(
        "--weights", choices=choices, default=default,
        help=f"the run's pretrained backbone (pretrain/checkpoints/last.ckpt) or its random init (default {default})",
    )  # fmt: skip

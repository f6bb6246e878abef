"""Loss landscapes of a run's classifier along random filter-normalised directions of its backbone.

Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets" (NeurIPS, arXiv:1712.09913): the loss
L(x, y) = CE(theta + x d1 + y d2) on a grid of (x, y), with d1, d2 random Gaussian directions
normalised filter by filter (`landscape_directions.py`); 1-D curves use d1 alone.

What moves and what is measured. The model is the run's backbone with its fitted linear probe on top
(`probed_model.py`), in eval mode. The directions perturb the BACKBONE's parameters only; the probe
(standardisation and linear layer) stays fixed, so the landscape is that of the representation as the
probe reads it. Tensors with ndim <= 1 (biases, BatchNorm affine parameters) get no direction and the
BatchNorm running statistics are never touched. The loss is the mean cross-entropy over an evenly
spaced subset of the classification val (or train) set, decoded and transformed once.

Speed. Every grid point runs the images in batches under `torch.inference_mode`, on a channels-last
model whose weights are set with `_foreach` kernels on a saved copy of the base weights. Precision
`auto` (the default) computes in bf16 autocast when the CPU has bf16 kernels (`pretrainlab.precision`) and the
loss at the origin is within 1 % of fp32's (BF16_ORIGIN_TOLERANCE), else in fp32; both origin losses are
reported (without bf16 kernels only fp32's, unless bf16 is asked for). Grid points are shared among
`workers` spawned processes of threads // workers threads each; they read the images and directions
from one memory-mapped temporary file and the model from one serialised copy. Measured on the
quickstart ResNet (32 px, 2 000 images, batch 128, 1 thread): 0.36 s per point in bf16, 0.75 s in fp32,
against 0.57 / 0.93 s with NCHW tensors; a profile of the bf16 point: convolutions 34 %, BatchNorm 31 %,
ReLU 14 %, residual adds 12 %.

Resume. The grid lives in `<run>/analysis/landscape/<name>.npz`, rewritten atomically after every
chunk of points with the options it was computed with and a fingerprint of the backbone weights and
images; a rerun skips computed points and refuses other options or other weights. Speed settings
(workers, batch size, threads) may change between sessions: they move the values by float rounding only.

Outputs of a complete grid: `<run>/plots/landscape_<name>_curve.png` (1-D), or `_contour.png` and
`_surface.png` (2-D), and a section of `<run>/analysis/landscape.md`.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import LogNorm
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch import Tensor, nn

from pretrainlab.analysis.landscape_directions import (
    PRECISIONS,
    WeightPlane,
    plane_losses,
    random_directions,
)
from pretrainlab.analysis.probed_model import probed_model
from pretrainlab.precision import has_fast_bf16
from pretrainlab.report.run_report import refresh_run_report
from pretrainlab.run_dir import RunDir

log = logging.getLogger(__name__)

Split = Literal["val", "train"]
PRECISION_CHOICES = ("auto", *PRECISIONS)
DEFAULT_PRECISION = "auto"
BF16_ORIGIN_TOLERANCE = 0.01  # bf16 is close enough when |L_bf16(0) - L_fp32(0)| <= this x L_fp32(0)
DEFAULT_WORKERS = 2
DEFAULT_BATCH_SIZE = 128  # 32 px, 1 thread, bf16: 64-256 within 5 %; larger batches lose when freed memory is unmapped
MAX_POINTS_PER_CHUNK = 4  # small chunks: balanced workers, little lost on interruption
RISE_RADII = (0.5, 1.0)
RISE_ANGLES = 64  # directions in the (d1, d2) plane the 2-D loss rise averages over
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")
SECTION_MARK = "<!-- landscape:{} -->"


@dataclass(frozen=True)
class LandscapeOptions:
    """What a grid's values depend on; stored with the grid and compared on resume.

    `compute_landscape` uses the grid (dims, steps, low, high), `seed` and `precision`; `num_images`,
    `split` and `weights` say where the images and weights come from (`landscape_for_run` acts on them).
    """

    dims: int = 2
    steps: int = 21
    low: float = -1.0
    high: float = 1.0
    num_images: int = 2000
    split: Split = "val"
    seed: int = 0
    precision: str = DEFAULT_PRECISION
    weights: str = "pretrained"

    def __post_init__(self) -> None:
        checks = {
            "dims": (self.dims in (1, 2), "1 or 2 directions"),
            "steps": (self.steps >= 2, "at least 2 grid points per direction"),
            "range": (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high,
                      "finite MIN < MAX"),
            "num_images": (self.num_images >= 1, "at least 1 image"),
            "split": (self.split in ("val", "train"), "val or train"),
            "precision": (self.precision in PRECISION_CHOICES, ", ".join(PRECISION_CHOICES)),
            "weights": (self.weights in ("pretrained", "random_init"), "pretrained or random_init"),
        }  # fmt: skip
        for key, (is_valid, expected) in checks.items():
            if not is_valid:
                value = (self.low, self.high) if key == "range" else getattr(self, key)
                raise ValueError(f"landscape option {key}={value!r} is not valid; expected {expected}")

    def coordinates(self) -> np.ndarray:
        """(steps,) evenly spaced coordinates from low to high, the same along each direction."""
        return np.linspace(self.low, self.high, self.steps)


@dataclass(eq=False)
class LandscapeResult:
    """A (possibly partial) grid: `losses[i]` (1-D) or `losses[i, j]` (2-D) at (x[i], y[j]).

    `precision` is the one the grid is computed in (`options.precision`, or what `auto` chose);
    `origin_loss` is the unperturbed model's loss in it, `origin_loss_fp32` in fp32;
    `seconds` sums the compute time of every session, `num_evaluated` counts this session's points.
    """

    options: LandscapeOptions
    fingerprint: str
    x: np.ndarray  # (S,)
    y: np.ndarray | None  # (S,), None in 1-D
    losses: np.ndarray  # (S,) or (S, S) float64, NaN where not computed
    computed: np.ndarray  # same shape, bool
    precision: str = ""  # set with the origin losses
    origin_loss: float = math.nan
    origin_loss_fp32: float = math.nan
    seconds: float = 0.0
    sessions: int = 0
    num_evaluated: int = 0

    @property
    def complete(self) -> bool:
        return bool(self.computed.all())

    def save(self, path: Path) -> None:
        """Write the grid as .npz atomically (temporary file, then rename)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        with temporary.open("wb") as file:
            np.savez(file, options=np.array(json.dumps(asdict(self.options))), fingerprint=np.array(self.fingerprint),
                     x=self.x, y=self.y if self.y is not None else np.zeros(0), losses=self.losses,
                     computed=self.computed, precision=np.array(self.precision), origin_loss=self.origin_loss,
                     origin_loss_fp32=self.origin_loss_fp32, seconds=self.seconds, sessions=self.sessions)  # fmt: skip
        os.replace(temporary, path)

    @classmethod
    def load(cls, path: Path) -> LandscapeResult:
        try:
            with np.load(path) as z:
                options = LandscapeOptions(**json.loads(str(z["options"])))
                return cls(options, str(z["fingerprint"]), z["x"], z["y"] if options.dims == 2 else None,
                           z["losses"], z["computed"], str(z["precision"]), float(z["origin_loss"]),
                           float(z["origin_loss_fp32"]), float(z["seconds"]), int(z["sessions"]))  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: not a readable landscape grid ({error}); delete it to start over") from None


def compute_landscape(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    options: LandscapeOptions,
    *,
    perturbed: str = "backbone",
    grid_path: Path | None = None,
    workers: int = DEFAULT_WORKERS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_threads: int | None = None,
    max_points: int | None = None,
    on_chunk: Callable[[LandscapeResult], None] | None = None,
    show_progress: bool = False,
) -> LandscapeResult:
    """The loss landscape of `model` along random filter-normalised directions of `perturbed`'s parameters.

    `model` itself is never modified: the points are evaluated on copies. On the CPU.

    Args:
        model: (B, C, H, W) images -> (B, K) logits.
        images: (N, C, H, W) float32 transformed images.
        labels: (N,) int64 class indices.
        options: the grid, the directions' seed and the precision (`auto`: bf16 autocast when its loss at
            the origin is within BF16_ORIGIN_TOLERANCE of fp32's, else fp32).
        perturbed: name of the submodule whose parameters move (`""`: every parameter of `model`).
        grid_path: the resumable grid file (.npz); None keeps the grid in memory.
        workers: processes sharing the grid points (1: this process).
        batch_size: images per forward.
        num_threads: threads shared by the workers (default: `torch.get_num_threads()`, i.e. the cores
            or OMP_NUM_THREADS).
        max_points: compute at most this many new points in this session (resume later).
        on_chunk: called with the grid after every completed (and saved) chunk of points.
        show_progress: a progress bar over the grid points.
    """
    if workers < 1 or batch_size < 1 or (max_points is not None and max_points < 1):
        raise ValueError(f"workers ({workers}), batch_size ({batch_size}) and max_points ({max_points}) must be >= 1")
    started = time.perf_counter()
    module = model.get_submodule(perturbed)
    weights = list(module.parameters())
    if not weights:
        raise ValueError(f"submodule '{perturbed}' of {type(model).__name__} has no parameters to perturb")
    grid = _open_grid(grid_path, options, _fingerprint(module, images, labels))
    todo = np.flatnonzero(~grid.computed.ravel())[:max_points]
    if len(todo) == 0:
        return grid
    seconds_before = grid.seconds
    grid.sessions += 1
    directions = random_directions(weights, options.dims, options.seed)
    threads = num_threads or torch.get_num_threads()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        plane = WeightPlane(copy.deepcopy(model), perturbed, directions, images, labels, batch_size=batch_size,
                            precision="fp32", channels_last=True)  # fmt: skip
        if not grid.precision:
            _evaluate_origin(grid, plane)
        plane.precision = grid.precision
        chunks = _chunks(todo, grid, workers)
        evaluated = contextlib.closing(plane_losses(plane, model, chunks, workers=workers, threads=threads))
        with _progress_bar(show_progress, grid) as advance, evaluated as results:
            for indices, losses in results:
                grid.losses.ravel()[indices] = losses
                grid.computed.ravel()[indices] = True
                grid.num_evaluated += len(indices)
                grid.seconds = seconds_before + time.perf_counter() - started
                if grid_path is not None:
                    grid.save(grid_path)
                advance(len(indices))
                if on_chunk is not None:
                    on_chunk(grid)
    finally:
        torch.set_num_threads(previous_threads)
    return grid


def _fingerprint(module: nn.Module, images: Tensor, labels: Tensor) -> str:
    """sha256 of the perturbed module's state (parameters and buffers), the images and the labels."""
    digest = hashlib.sha256()
    tensors = [*module.state_dict().values(), images, labels]
    for tensor in tensors:
        digest.update(str((tuple(tensor.shape), tensor.dtype)).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _open_grid(path: Path | None, options: LandscapeOptions, fingerprint: str) -> LandscapeResult:
    """The grid file's grid when it exists (same options and weights required), else an empty grid."""
    if path is not None and path.is_file():
        grid = LandscapeResult.load(path)
        if grid.options != options:
            stored, asked = asdict(grid.options), asdict(options)
            changes = ", ".join(f"{k} {stored[k]!r} there, {asked[k]!r} now" for k in stored if stored[k] != asked[k])
            raise ValueError(f"{path}: this grid was computed with other options ({changes}); use its options to "
                             "resume it, another --name, or delete the file")  # fmt: skip
        if grid.fingerprint != fingerprint:
            raise ValueError(f"{path}: this grid was computed from other weights or images (fingerprint "
                             f"{grid.fingerprint}, now {fingerprint}); delete the file to start over")  # fmt: skip
        log.info("%s: resuming, %d of %d points done", path, grid.computed.sum(), grid.computed.size)
        return grid
    coordinates = options.coordinates()
    shape = (options.steps,) * options.dims
    return LandscapeResult(options, fingerprint, coordinates, coordinates.copy() if options.dims == 2 else None,
                           np.full(shape, np.nan), np.zeros(shape, dtype=bool))  # fmt: skip


def _evaluate_origin(grid: LandscapeResult, plane: WeightPlane) -> None:
    """The unperturbed loss in fp32 and bf16, and the grid's precision: `auto` takes bf16 when the CPU has bf16
    kernels and it is within BF16_ORIGIN_TOLERANCE of fp32 (relative), else fp32 (without the kernels, bf16 is
    not computed); an explicit bf16 that strays is kept, with a warning."""
    origin = (0.0,) * grid.options.dims
    grid.origin_loss_fp32 = fp32 = plane.loss(origin, "fp32")
    if grid.options.precision == "fp32" or (grid.options.precision == "auto" and not has_fast_bf16("cpu")):
        grid.precision, grid.origin_loss = "fp32", fp32
        return
    bf16 = plane.loss(origin, "bf16")
    is_close = abs(bf16 - fp32) <= BF16_ORIGIN_TOLERANCE * fp32
    grid.precision = "fp32" if grid.options.precision == "auto" and not is_close else "bf16"
    grid.origin_loss = bf16 if grid.precision == "bf16" else fp32
    message = "loss at the origin: bf16 %.5f, fp32 %.5f (%s %.0f %%): computing in %s"
    arguments = (bf16, fp32, "within" if is_close else "off by more than", 100 * BF16_ORIGIN_TOLERANCE, grid.precision)
    log.log(logging.INFO if is_close or grid.options.precision == "auto" else logging.WARNING, message, *arguments)


Chunk = tuple[np.ndarray, list[tuple[float, ...]]]  # flat grid indices, their coordinates


def _chunks(todo: np.ndarray, grid: LandscapeResult, workers: int) -> list[Chunk]:
    """Points to compute in chunks of at most MAX_POINTS_PER_CHUNK, about 8 chunks per worker."""
    size = max(1, min(MAX_POINTS_PER_CHUNK, math.ceil(len(todo) / (8 * workers))))
    shape = grid.computed.shape
    axes = [grid.x] if grid.y is None else [grid.x, grid.y]
    chunks = []
    for start in range(0, len(todo), size):
        indices = todo[start : start + size]
        positions = np.unravel_index(indices, shape)
        coords = [tuple(float(axis[p[k]]) for axis, p in zip(axes, positions)) for k in range(len(indices))]
        chunks.append((indices, coords))
    return chunks


@contextlib.contextmanager
def _progress_bar(enabled: bool, grid: LandscapeResult) -> Iterator[Callable[[int], None]]:
    """`advance(n)` of a rich progress bar over the grid points (shown when `enabled`)."""
    columns = (TextColumn("landscape"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not enabled) as bar:
        task = bar.add_task("points", total=grid.computed.size, completed=int(grid.computed.sum()))
        yield lambda n: bar.advance(task, n)


def loss_rise(result: LandscapeResult, radius: float) -> float | None:
    """Mean over directions u of L(radius u) - L(0): u = +-d1 in 1-D (linear interpolation), u on the unit
    circle of the (d1, d2) plane in 2-D (RISE_ANGLES angles, bilinear interpolation). None when the grid
    does not reach `radius`."""
    x = result.x
    if radius > min(-x[0], x[-1]):
        return None
    if result.y is None:
        values = np.interp([-radius, radius], x, result.losses)
    else:
        angles = np.linspace(0.0, 2 * math.pi, RISE_ANGLES, endpoint=False)
        values = _bilinear(x, result.y, result.losses, radius * np.cos(angles), radius * np.sin(angles))
    return float(np.mean(values)) - result.origin_loss


def _bilinear(x: np.ndarray, y: np.ndarray, values: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """values (S_x, S_y) on the grid x, y, interpolated at the points (px, py) inside it."""
    i = np.clip(np.searchsorted(x, px) - 1, 0, len(x) - 2)
    j = np.clip(np.searchsorted(y, py) - 1, 0, len(y) - 2)
    tx, ty = (px - x[i]) / (x[i + 1] - x[i]), (py - y[j]) / (y[j + 1] - y[j])
    return ((1 - tx) * (1 - ty) * values[i, j] + tx * (1 - ty) * values[i + 1, j]
            + (1 - tx) * ty * values[i, j + 1] + tx * ty * values[i + 1, j + 1])  # fmt: skip


def plot_landscape(result: LandscapeResult, plots_dir: Path, name: str) -> list[Path]:
    """The 1-D curve, or the 2-D contour and 3-D surface plots of a complete grid; their paths."""
    plots_dir.mkdir(parents=True, exist_ok=True)
    title = f"{name}\nloss along {2 if result.y is not None else 1} filter-normalised direction(s) (Li et al. 2018)"
    if result.y is None:
        path = plots_dir / f"landscape_{name}_curve.png"
        fig, ax = plt.subplots(figsize=(6, 4))
        try:
            ax.plot(result.x, result.losses, marker="o", ms=3)
            ax.set(xlabel="step along d1", ylabel="cross-entropy", title=title)
            ax.title.set_fontsize(9)
            ax.grid(alpha=0.3)
            fig.tight_layout()
            fig.savefig(path, dpi=110)
        finally:
            plt.close(fig)
        return [path]
    grid_x, grid_y = np.meshgrid(result.x, result.y, indexing="ij")  # (S, S) each, like losses
    levels, norm = _contour_levels(result.losses)
    contour_path, surface_path = (plots_dir / f"landscape_{name}_{kind}.png" for kind in ("contour", "surface"))
    fig, ax = plt.subplots(figsize=(5.8, 4.8))
    try:
        filled = ax.contourf(grid_x, grid_y, result.losses, levels=levels, norm=norm, cmap="viridis")
        ax.contour(grid_x, grid_y, result.losses, levels=levels, colors="k", linewidths=0.3)
        fig.colorbar(filled, ax=ax, label="cross-entropy", ticks=levels[::4], format="%.3g")
        ax.plot([0], [0], "r+", ms=10)
        ax.set(xlabel="d1", ylabel="d2", title=title, aspect="equal")
        ax.title.set_fontsize(9)
        fig.tight_layout()
        fig.savefig(contour_path, dpi=110)
    finally:
        plt.close(fig)
    fig = plt.figure(figsize=(6.4, 5))
    try:
        ax3d = fig.add_subplot(projection="3d")
        ax3d.plot_surface(grid_x, grid_y, result.losses, cmap="viridis", linewidth=0, antialiased=True)
        ax3d.set(xlabel="d1", ylabel="d2", zlabel="cross-entropy", title=title)
        ax3d.title.set_fontsize(9)
        fig.savefig(surface_path, dpi=110)
    finally:
        plt.close(fig)
    return [contour_path, surface_path]


def _contour_levels(losses: np.ndarray) -> tuple[np.ndarray, LogNorm | None]:
    """25 levels over the finite losses: log-spaced when they span more than a factor 10."""
    finite = losses[np.isfinite(losses)]
    low, high = float(finite.min()), float(finite.max())
    if low > 0 and high / low > 10:
        return np.geomspace(low, high, 25), LogNorm(low, high)
    return np.linspace(low, max(high, low + 1e-6), 25), None


def landscape_markdown(
    result: LandscapeResult, name: str, figures: Sequence[Path], setup_seconds: float, num_images: int
) -> str:
    """The run report's section on one grid: options, the origin, min / max, loss rises, figures, time."""
    o = result.options
    grid = f"{o.steps} points" if o.dims == 1 else f"{o.steps} x {o.steps} points"
    rises = {radius: loss_rise(result, radius) for radius in RISE_RADII}
    description = (
        f"{o.dims}-D, {grid} over [{o.low:g}, {o.high:g}] along {o.dims} random filter-normalised direction(s) of "
        f"the {o.weights} backbone's weights (seed {o.seed}; Li et al. 2018); loss = cross-entropy of the fixed "
        f"linear probe on {num_images} evenly spaced {o.split} images, {result.precision}"
        f"{' (auto)' if o.precision == 'auto' else ''}."
    )
    time_taken = (f"{result.seconds:.0f} s for {result.computed.size} points in {result.sessions} session(s), "
                  f"+ {setup_seconds:.0f} s set-up (model, probe, images)")  # fmt: skip
    lines = [
        f"## Loss landscape `{name}`", "", description, "",
        "| quantity | value |", "|---|---:|",
        f"| loss at the origin | {result.origin_loss:.4f} (fp32 {result.origin_loss_fp32:.4f}) |",
        f"| min / max over the grid | {np.nanmin(result.losses):.4f} / {np.nanmax(result.losses):.4f} |",
        *(f"| loss rise at radius {r:g} (mean over directions) | {'n/a' if v is None else f'{v:.4f}'} |"
          for r, v in rises.items()),
        f"| time | {time_taken} |", "",
        " ".join(f"![{path.stem}](../plots/{path.name})" for path in figures), "",
    ]  # fmt: skip
    return "\n".join(lines)


def write_markdown_section(path: Path, name: str, section: str) -> None:
    """Replace (or append) the section `name` of the landscape Markdown file, keeping the others."""
    sections: dict[str, str] = {}
    if path.is_file():
        parts = re.split(r"^<!-- landscape:(\S+) -->\n", path.read_text(), flags=re.MULTILINE)
        sections = dict(zip(parts[1::2], parts[2::2]))
    sections[name] = section
    text = "# Loss landscapes\n\n" + "".join(f"{SECTION_MARK.format(n)}\n{s.rstrip()}\n\n" for n, s in sections.items())
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    temporary.replace(path)


def evenly_spaced(total: int, count: int) -> list[int]:
    """`count` indices spread evenly over range(total) (all of them when count >= total)."""
    return list(range(total)) if count >= total else [(k * total) // count for k in range(count)]


def load_images(dataset: Sequence[tuple[Tensor, int]], count: int) -> tuple[Tensor, Tensor]:
    """Decode and transform `count` evenly spaced samples of `dataset` once: (N, C, H, W), (N,) int64."""
    indices = evenly_spaced(len(dataset), count)
    samples = [dataset[index] for index in indices]
    return torch.stack([image for image, _ in samples]), torch.tensor([label for _, label in samples])


def landscape_for_run(
    run_dir: Path,
    options: LandscapeOptions,
    *,
    name: str | None = None,
    workers: int = DEFAULT_WORKERS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_points: int | None = None,
    show_progress: bool = False,
) -> LandscapeResult:
    """The landscape of a run's probed backbone (module docstring); plots and Markdown once complete."""
    name = name or f"{options.weights}_{options.dims}d"
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"landscape name {name!r} is not valid; expected letters, digits, '_', '.', '-'")
    started = time.perf_counter()
    probed = probed_model(run_dir, options.weights)
    dataset = (probed.val_loader if options.split == "val" else probed.train_loader).dataset
    images, labels = load_images(dataset, options.num_images)
    if len(images) < options.num_images:
        log.warning("%s set has %d images, fewer than num_images=%d: using all", options.split, len(images),
                    options.num_images)  # fmt: skip
    setup_seconds = time.perf_counter() - started
    grid_path = RunDir(run_dir).analysis_dir / "landscape" / f"{name}.npz"
    result = compute_landscape(probed.classifier, images, labels, options, grid_path=grid_path, workers=workers,
                               batch_size=batch_size, max_points=max_points, show_progress=show_progress)  # fmt: skip
    if not result.complete:
        log.info("%s: %d of %d points done; run again to resume", grid_path, result.computed.sum(), result.computed.size)
        return result
    figures = plot_landscape(result, RunDir(Path(run_dir)).plots, name)
    markdown = RunDir(run_dir).analysis_dir / "landscape.md"
    write_markdown_section(markdown, name, landscape_markdown(result, name, figures, setup_seconds, len(images)))
    refresh_run_report(Path(run_dir))
    log.info("landscape %s: origin %.4f, min %.4f, max %.4f, %.0f s; wrote %s", name, result.origin_loss,
             np.min(result.losses), np.max(result.losses), result.seconds, markdown)  # fmt: skip
    return result


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """`pretrainlab analyze landscape` options."""
    parser.add_argument("--run", type=Path, required=True, metavar="DIR",
                        help="run directory (config.yaml, pretrain/checkpoints/)")  # fmt: skip
    parser.add_argument("--weights", choices=("pretrained", "random_init"), default="pretrained",
                        help="the run's pretrained backbone or its random init")  # fmt: skip
    parser.add_argument("--dims", type=int, choices=(1, 2), default=2, help="1-D curve or 2-D surface")
    parser.add_argument("--steps", type=int, help="grid points per direction (default: 51 in 1-D, 21 in 2-D)")
    parser.add_argument("--range", type=float, nargs=2, default=(-1.0, 1.0), metavar=("MIN", "MAX"),
                        help="coordinates along each direction, in filter norms")  # fmt: skip
    parser.add_argument("--num-images", type=int, default=2000, help="evenly spaced images the loss averages over")
    parser.add_argument("--split", choices=("val", "train"), default="val", help="classification split of the images")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random directions")
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default=DEFAULT_PRECISION,
                        help=f"bf16 autocast, fp32, or auto: bf16 when its loss at the origin is within "
                             f"{100 * BF16_ORIGIN_TOLERANCE:.0f} %% of fp32's, else fp32")  # fmt: skip
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="processes sharing the grid points")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="images per forward")
    parser.add_argument("--name", help="grid name: <run>/analysis/landscape/<name>.npz (default <weights>_<dims>d)")
    parser.add_argument("--max-points", type=int, help="stop after this many new points (rerun to resume)")


def run_cli(args: argparse.Namespace) -> int:
    """Run `pretrainlab analyze landscape` from the parsed `add_cli_arguments` options."""
    options = LandscapeOptions(
        dims=args.dims, steps=args.steps or (51 if args.dims == 1 else 21), low=args.range[0], high=args.range[1],
        num_images=args.num_images, split=args.split, seed=args.seed, precision=args.precision, weights=args.weights,
    )  # fmt: skip
    landscape_for_run(args.run, options, name=args.name, workers=args.workers, batch_size=args.batch_size,
                      max_points=args.max_points, show_progress=not getattr(args, "quiet", False))  # fmt: skip
    return 0

"""Directions in weight space for loss landscapes, and a model moved along them (here or in workers).

Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets" (NeurIPS, arXiv:1712.09913), §4:
a random Gaussian direction is rescaled filter by filter to the norm of the weight's filter, so that
a step of 1 changes every filter by as much as its own size and landscapes of networks whose layers
differ in scale (or are scale invariant through BatchNorm) compare. Semantics of the original
`normalize_directions_for_weights(direction, weights, norm='filter', ignore='biasbn')`
(github.com/tomgoldstein/loss-landscape, `net_plotter.py`):

* a tensor with ndim <= 1 (biases, BatchNorm / LayerNorm weights and biases) gets a zero direction;
* every other tensor is taken filter by filter along dim 0 (conv output channel, linear row):
  d[k] <- d[k] * ||w[k]|| / (||d[k]|| + 1e-10), Frobenius norms over the remaining dims.

Only parameters move: buffers (BatchNorm running statistics) are no part of a direction.
`WeightPlane` sets a model's parameters to base + x * d1 (+ y * d2) with `torch._foreach_*`
kernels on a saved copy of the base weights, without rebuilding or copying the model per point;
`plane_losses` evaluates chunks of points on it, or on spawned worker processes.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import pickle
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pretrainlab.engine.malloc import keep_freed_memory

NORM_EPS = 1e-10  # the original's guard against an all-zero direction filter
PRECISIONS = ("bf16", "fp32")
Key = TypeVar("Key")
Point = Sequence[float]  # coordinates along each direction


def filter_normalize_(direction: Tensor, weight: Tensor) -> Tensor:
    """Rescale `direction` in place to `weight`'s filter norms (module docstring) and return it.

    Args:
        direction: (K, ...) or (K,) random direction for `weight`, any float dtype.
        weight: tensor of the same shape, left unchanged.
    """
    if direction.shape != weight.shape:
        raise ValueError(f"direction shape {tuple(direction.shape)} differs from weight shape {tuple(weight.shape)}")
    if direction.ndim <= 1:
        return direction.zero_()
    filters = len(direction)
    weight_norms = torch.linalg.vector_norm(weight.detach().reshape(filters, -1), dim=1)  # (K,)
    direction_norms = torch.linalg.vector_norm(direction.reshape(filters, -1), dim=1)  # (K,)
    scale = weight_norms / (direction_norms + NORM_EPS)  # (K,)
    return direction.mul_(scale.reshape(filters, *([1] * (direction.ndim - 1))))


def random_direction(weights: Sequence[Tensor], generator: torch.Generator) -> list[Tensor]:
    """A filter-normalised random direction: N(0, 1) per tensor, drawn in order (1-D tensors too, as
    the original's `torch.randn(w.size())` per weight), then `filter_normalize_`. float32, contiguous."""
    direction = []
    for weight in weights:
        noise = torch.randn(weight.shape, generator=generator, dtype=torch.float32)
        direction.append(filter_normalize_(noise, weight.float()))
    return direction


def random_directions(weights: Sequence[Tensor], num_directions: int, seed: int) -> list[list[Tensor]]:
    """`num_directions` (1 or 2) directions from one generator seeded with `seed`: x first, then y."""
    if num_directions not in (1, 2):
        raise ValueError(f"a landscape has 1 or 2 directions, got {num_directions}")
    generator = torch.Generator().manual_seed(seed)
    return [random_direction(weights, generator) for _ in range(num_directions)]


def precision_context(precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on the CPU, or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    if precision == "fp32":
        return contextlib.nullcontext()
    raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


class WeightPlane:
    """A model whose parameters of one submodule are set to base + sum_i c_i * d_i, and its mean
    cross-entropy on fixed images at any such point.

    The model is taken over (put in eval mode, gradients off, optionally channels-last): give a copy.
    The base weights are saved once; `set_point` writes base + offset into the parameters with
    `_foreach` kernels (offset = c_1 d_1 + c_2 d_2, summed before it is added, as the original does).

    Args:
        model: (B, C, H, W) images -> (B, K) logits.
        perturbed: name of the submodule whose parameters move (`""`: all of them).
        directions: 1 or 2 directions, each one tensor per parameter of `perturbed` in
            `parameters()` order, same shapes.
        images: (N, C, H, W) float32, already transformed.
        labels: (N,) int64 class indices.
        batch_size: images per forward.
        precision: `bf16` (autocast) or `fp32`.
        channels_last: NHWC model and images (faster convolutions on the CPU).
    """

    def __init__(
        self,
        model: nn.Module,
        perturbed: str,
        directions: Sequence[Sequence[Tensor]],
        images: Tensor,
        labels: Tensor,
        *,
        batch_size: int,
        precision: str,
        channels_last: bool,
    ) -> None:
        if images.ndim != 4 or labels.shape != (len(images),) or len(images) == 0:
            raise ValueError(f"expected images (N, C, H, W) and labels (N,) with N >= 1, got {tuple(images.shape)} "
                             f"and {tuple(labels.shape)}")  # fmt: skip
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        precision_context(precision)  # checks the name
        model.eval().requires_grad_(False)
        if channels_last:
            model.to(memory_format=torch.channels_last)
            images = images.contiguous(memory_format=torch.channels_last)
        self.model, self.perturbed = model, perturbed
        self.params = list(model.get_submodule(perturbed).parameters())
        self.base = [param.detach().clone() for param in self.params]
        self.directions = [_matching(direction, self.base, perturbed) for direction in directions]
        self.images, self.labels = images, labels.long()
        self.batch_size, self.precision, self.channels_last = batch_size, precision, channels_last

    @torch.no_grad()
    def set_point(self, point: Point) -> None:
        """Parameters <- base + sum_i point[i] * directions[i]."""
        if len(point) != len(self.directions):
            raise ValueError(f"{len(point)} coordinates for {len(self.directions)} directions")
        offset = torch._foreach_mul(self.directions[0], point[0])
        for direction, coord in zip(self.directions[1:], point[1:]):
            torch._foreach_add_(offset, direction, alpha=coord)
        torch._foreach_copy_(self.params, self.base)
        torch._foreach_add_(self.params, offset)

    def loss(self, point: Point, precision: str | None = None) -> float:
        """Mean cross-entropy over the images at `point` (in `precision`, default the plane's)."""
        self.set_point(point)
        total = 0.0
        with torch.inference_mode(), precision_context(precision or self.precision):
            for start in range(0, len(self.images), self.batch_size):
                logits = self.model(self.images[start : start + self.batch_size])  # (B, K)
                labels = self.labels[start : start + self.batch_size]
                total += float(F.cross_entropy(logits.float(), labels, reduction="sum"))
        return total / len(self.images)


def _matching(direction: Sequence[Tensor], base: Sequence[Tensor], perturbed: str) -> list[Tensor]:
    """`direction` as float tensors laid out like the parameters (channels-last stays channels-last)."""
    if len(direction) != len(base):
        raise ValueError(f"direction has {len(direction)} tensors, submodule '{perturbed}' has {len(base)} parameters")
    matched = []
    for index, (d, b) in enumerate(zip(direction, base)):
        if d.shape != b.shape:
            raise ValueError(f"direction tensor {index} has shape {tuple(d.shape)}, parameter {index} of "
                             f"'{perturbed}' has {tuple(b.shape)}")  # fmt: skip
        matched.append(torch.empty_like(b).copy_(d))
    return matched


def plane_losses(
    plane: WeightPlane, model: nn.Module, chunks: Sequence[tuple[Key, Sequence[Point]]], *, workers: int, threads: int
) -> Iterator[tuple[Key, list[float]]]:
    """(key, losses) of every chunk of points, in the order chunks complete.

    With one worker (or one chunk) the chunks run on `plane` in this process. Otherwise `workers`
    spawned processes of threads // workers threads each share them; each builds its own plane from
    `model` (the unmodified model `plane` was built from a copy of), passed once to each worker, and the images,
    labels and directions, saved once to a temporary file that every worker memory-maps. Close the
    iterator early (e.g. `contextlib.closing`) and the chunks not yet started are cancelled.
    """
    if workers == 1 or len(chunks) <= 1:
        for key, points in chunks:
            yield key, [plane.loss(point) for point in points]
        return
    try:  # the workers receive the model through multiprocessing's pickling: check it pickles, with a clear error
        pickle.dumps(model)
    except (pickle.PicklingError, AttributeError, TypeError) as error:
        raise ValueError(f"{type(model).__name__} cannot be sent to worker processes ({error}); use workers=1") from None
    settings = (plane.perturbed, plane.batch_size, plane.precision, plane.channels_last, max(1, threads // workers))
    with tempfile.TemporaryDirectory(prefix="landscape-") as folder:
        inputs = Path(folder) / "inputs.pt"
        torch.save({"images": plane.images, "labels": plane.labels, "directions": plane.directions}, inputs)
        pool = ProcessPoolExecutor(min(workers, len(chunks)), mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=(model, str(inputs), settings))  # fmt: skip
        try:
            futures = {pool.submit(_worker_losses, points): key for key, points in chunks}
            for future in as_completed(futures):
                yield futures[future], future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


_WORKER_PLANE: WeightPlane | None = None


def _init_worker(model: nn.Module, inputs_path: str, settings: tuple[str, int, str, bool, int]) -> None:
    """A worker's set-up: its share of the threads, freed activations kept (as the CLI does), its own model,
    the memory-mapped inputs."""
    global _WORKER_PLANE
    perturbed, batch_size, precision, channels_last, threads = settings
    torch.set_num_threads(threads)
    keep_freed_memory()  # else every large activation is page-faulted in again, per batch
    inputs = torch.load(inputs_path, mmap=True, weights_only=True)
    _WORKER_PLANE = WeightPlane(model, perturbed, inputs["directions"], inputs["images"], inputs["labels"],
                                batch_size=batch_size, precision=precision, channels_last=channels_last)  # fmt: skip


def _worker_losses(points: Sequence[Point]) -> list[float]:
    assert _WORKER_PLANE is not None, "worker used before _init_worker"
    return [_WORKER_PLANE.loss(point) for point in points]

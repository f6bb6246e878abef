"""Guarded `torch.distributed` helpers.

Every function works in a single process without `init_process_group`: reductions are
no-ops and gathers return the local tensor. When a process group is initialised, the
collectives must be called by every rank in the same order (as with any collective).
Gathers accept a different number of rows per rank (tensors are padded for the
transfer and trimmed afterwards), so an uneven last batch is fine.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """True when `torch.distributed` is available and a process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes in the default group (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """Rank of this process in the default group (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def _collective_device(tensor: Tensor) -> torch.device:
    """NCCL only reduces CUDA tensors: CPU tensors take a detour through the current GPU."""
    if dist.get_backend() == "nccl" and tensor.device.type == "cpu":
        return torch.device("cuda", torch.cuda.current_device())
    return tensor.device


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Element-wise sum over ranks, as a new tensor on the input's device (not differentiable).

    The input is never modified; in one process it is returned as is.
    """
    if not is_distributed():
        return tensor
    reduced = tensor.detach().to(_collective_device(tensor), copy=True)
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced.to(tensor.device)


def all_reduce_mean(tensor: Tensor) -> Tensor:
    """Element-wise mean over ranks (floating tensors), as a new tensor.

    In one process the input is returned as is.
    """
    if not tensor.is_floating_point():
        raise ValueError(f"all_reduce_mean needs a floating tensor, got dtype {tensor.dtype}; use all_reduce_sum")
    if not is_distributed():
        return tensor
    return all_reduce_sum(tensor) / world_size()


def _gather_rows(tensor: Tensor) -> tuple[list[Tensor], list[int]]:
    """Gather `tensor` (n_r, ...) from every rank; returns the per-rank tensors and their n_r."""
    device = _collective_device(tensor)
    local_rows = torch.tensor([tensor.shape[0]], dtype=torch.int64, device=device)
    all_rows = [torch.zeros_like(local_rows) for _ in range(world_size())]
    dist.all_gather(all_rows, local_rows)
    sizes = [int(n.item()) for n in all_rows]
    max_rows = max(sizes)
    padded = tensor.detach().to(device).contiguous()
    if padded.shape[0] < max_rows:
        filler = padded.new_zeros((max_rows - padded.shape[0], *padded.shape[1:]))
        padded = torch.cat([padded, filler])  # (max_rows, ...)
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return [part[:n].to(tensor.device) for part, n in zip(parts, sizes)], sizes


class _AllGatherWithGrad(torch.autograd.Function):
    """Concatenate rows over ranks; the backward sums the incoming gradients over ranks and
    returns this rank's slice, i.e. the gradient of (sum over ranks of each rank's loss)."""

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:  # type: ignore[override]
        parts, sizes = _gather_rows(tensor)
        ctx.start = sum(sizes[: rank()])
        ctx.rows = sizes[rank()]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> Tensor:  # type: ignore[override]
        summed = all_reduce_sum(grad_output.contiguous())
        return summed[ctx.start : ctx.start + ctx.rows]


def all_gather_with_grad(tensor: Tensor) -> Tensor:
    """Concatenate `tensor` (n_r, ...) of every rank along dim 0 -> (sum_r n_r, ...), rank order.

    The gradient flows back to the local rows: backward sums the gradient of the gathered
    tensor over ranks (every rank must call backward) and keeps this rank's slice, which is
    the gradient of the sum of all ranks' losses. Identity in one process.
    """
    if not is_distributed():
        return tensor
    return _AllGatherWithGrad.apply(tensor)


def all_gather_no_grad(tensor: Tensor) -> Tensor:
    """Concatenate `tensor` (n_r, ...) of every rank along dim 0, detached, in rank order.

    In one process it returns `tensor.detach()`.
    """
    if not is_distributed():
        return tensor.detach()
    with torch.no_grad():
        parts, _ = _gather_rows(tensor)
        return torch.cat(parts)


def launched_as_rank_zero() -> bool:
    """True unless this process's launcher marked it as another rank: torchrun's `RANK`, SLURM's
    `SLURM_PROCID`, or Lightning's `NODE_RANK` / `LOCAL_RANK` (set for every process it starts
    besides the first). Works before (and without) a process group."""
    for key in ("RANK", "SLURM_PROCID"):
        if key in os.environ:
            return int(os.environ[key]) == 0
    return int(os.environ.get("NODE_RANK", 0)) == 0 and int(os.environ.get("LOCAL_RANK", 0)) == 0


def is_rank_zero() -> bool:
    """True in the process that writes run files: rank 0 of the group, else of the launcher."""
    return rank() == 0 if is_distributed() else launched_as_rank_zero()

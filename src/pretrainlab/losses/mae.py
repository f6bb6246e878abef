"""MAE's patch layout, per-sample random masking and reconstruction loss (He et al. 2021,
arXiv:2111.06377), as pure functions checked against the official `models_mae.py` numbers
(`shared/reference/mae.npz`).

Patch layout: patch l = row · (W / p) + column (row-major); inside a patch the vector is
(row in patch, column in patch, channel) with the channel fastest, i.e. NHWC per patch.
Masks: 1 = removed (its reconstruction is scored), 0 = kept.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

NORM_PIX_EPS = 1e-6


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """(B, C, H, W) -> (B, L, p·p·C), L = (H / p)·(W / p)."""
    batch, channels, height, width = images.shape
    if height % patch_size or width % patch_size:
        raise ValueError(f"image size {height}x{width} is not a multiple of the patch size {patch_size}")
    rows, cols = height // patch_size, width // patch_size
    x = images.reshape(batch, channels, rows, patch_size, cols, patch_size)
    x = torch.einsum("bchpwq->bhwpqc", x)
    return x.reshape(batch, rows * cols, patch_size * patch_size * channels)


def unpatchify(patches: Tensor, patch_size: int, grid: tuple[int, int]) -> Tensor:
    """(B, L, p·p·C) -> (B, C, rows·p, cols·p) for a patch grid (rows, cols); the inverse of `patchify`."""
    batch, length, dim = patches.shape
    rows, cols = grid
    channels = dim // (patch_size * patch_size)
    if rows * cols != length or channels * patch_size * patch_size != dim:
        raise ValueError(f"patches {tuple(patches.shape)} do not fit a {rows}x{cols} grid of {patch_size}-px patches")
    x = patches.reshape(batch, rows, cols, patch_size, patch_size, channels)
    x = torch.einsum("bhwpqc->bchpwq", x)
    return x.reshape(batch, channels, rows * patch_size, cols * patch_size)


class RandomMask(NamedTuple):
    ids_keep: Tensor  # (B, len_keep) int64: kept patch indices, lowest noise first
    mask: Tensor  # (B, L): 1 = removed, 0 = kept, in patch order
    ids_restore: Tensor  # (B, L) int64: position of each patch in the shuffled order


def random_masking(noise: Tensor, mask_ratio: float) -> RandomMask:
    """MAE's per-sample random masking from uniform noise (B, L): the int(L·(1 − ratio)) patches
    with the lowest noise are kept."""
    batch, length = noise.shape
    len_keep = int(length * (1 - mask_ratio))
    ids_shuffle = torch.argsort(noise, dim=1)  # ascending: small noise is kept
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    shuffled_mask = torch.ones(batch, length, dtype=noise.dtype, device=noise.device)
    shuffled_mask[:, :len_keep] = 0
    return RandomMask(ids_shuffle[:, :len_keep], torch.gather(shuffled_mask, 1, ids_restore), ids_restore)


def mae_loss(pred: Tensor, target: Tensor, mask: Tensor, *, norm_pix_loss: bool) -> Tensor:
    """Mean over removed patches of the per-patch mean squared error.

    Args:
        pred: (B, L, D) reconstruction; target: (B, L, D) patchified image (`patchify`).
        mask: (B, L), 1 = removed (scored), 0 = kept.
        norm_pix_loss: standardise every target patch by its mean and unbiased variance (+ 1e-6).
    """
    if norm_pix_loss:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)  # unbiased (N - 1), as the official code
        target = (target - mean) / (var + NORM_PIX_EPS) ** 0.5
    per_patch = ((pred - target) ** 2).mean(dim=-1)  # (B, L)
    return (per_patch * mask).sum() / mask.sum()

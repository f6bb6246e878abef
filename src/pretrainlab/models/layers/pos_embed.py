"""Fixed 2-D sine-cosine position embeddings, laid out as MAE's (`util/pos_embed.py`), so
checkpoints of the official release hold the same values.

For a grid of rows × cols patches (row-major), the first D/2 channels encode the patch's
column and the last D/2 its row (MAE builds `meshgrid(w, h)` and calls the first half
`emb_h`); each half is [sin(pos·ω), cos(pos·ω)] with ω_i = 10000^(−i / (D/4)).
"""

from __future__ import annotations

import torch
from torch import Tensor


def sincos_1d(dim: int, positions: Tensor) -> Tensor:
    """(M,) positions -> (M, dim): [sin(pos·ω), cos(pos·ω)], ω_i = 1 / 10000^(i / (dim / 2))."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding width must be even, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))  # (dim/2,)
    angles = positions.double()[:, None] * omega[None]  # (M, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(dim: int, grid: tuple[int, int], *, cls_token: bool) -> Tensor:
    """(1, [1 +] rows·cols, dim) float32 embedding of a (rows, cols) patch grid; with `cls_token`
    a zero row comes first (the class token's slot)."""
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding width must be a multiple of 4, got {dim}")
    rows, cols = grid
    row_index, col_index = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")  # (rows, cols)
    embedding = torch.cat([sincos_1d(dim // 2, col_index.flatten()), sincos_1d(dim // 2, row_index.flatten())], dim=1)
    if cls_token:
        embedding = torch.cat([torch.zeros(1, dim, dtype=embedding.dtype), embedding])
    return embedding.float()[None]

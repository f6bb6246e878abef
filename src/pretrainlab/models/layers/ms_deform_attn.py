"""Multi-scale deformable attention (Zhu et al. 2021, Deformable DETR, arXiv:2010.04159, Eq. 3) in
plain PyTorch: bilinear sampling by `F.grid_sample`, no compiled op, so it runs wherever torch does.

Each query, per head, predicts `num_points` sampling offsets on each of `num_levels` maps around its
reference point and one softmax-normalised weight per sampled point; the output is the weighted sum
of the values sampled there (zero outside the map, as the CUDA kernel does).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def ms_deform_attn_sample(
    values: Tensor, spatial_shapes: list[tuple[int, int]], locations: Tensor, weights: Tensor
) -> Tensor:
    """The core of multi-scale deformable attention.

    Args:
        values: (B, S, M, Dh), S = sum of h_l · w_l over the levels (row-major, finest first or
            in any order matching `spatial_shapes`), M heads of Dh channels.
        spatial_shapes: L (h_l, w_l).
        locations: (B, Nq, M, L, P, 2) sampling points (x, y) in [0, 1] (align_corners=False).
        weights: (B, Nq, M, L, P) attention weights (normalised over L · P by the caller).

    Returns:
        (B, Nq, M · Dh).
    """
    B, _, M, Dh = values.shape
    _, Nq, _, L, P, _ = locations.shape
    if sum(h * w for h, w in spatial_shapes) != values.shape[1] or len(spatial_shapes) != L:
        raise ValueError(f"values of length {values.shape[1]} do not match spatial shapes {spatial_shapes}")
    per_level = values.split([h * w for h, w in spatial_shapes], dim=1)
    grids = 2.0 * locations - 1.0
    sampled = []
    for level, (h, w) in enumerate(spatial_shapes):
        value = per_level[level].permute(0, 2, 3, 1).reshape(B * M, Dh, h, w)  # (B·M, Dh, h, w)
        grid = grids[:, :, :, level].transpose(1, 2).reshape(B * M, Nq, P, 2)  # (B·M, Nq, P, 2)
        sampled.append(F.grid_sample(value, grid, mode="bilinear", padding_mode="zeros", align_corners=False))
    stacked = torch.stack(sampled, dim=-2).flatten(-2)  # (B·M, Dh, Nq, L·P)
    attention = weights.transpose(1, 2).reshape(B * M, 1, Nq, L * P)
    output = (stacked * attention).sum(-1)  # (B·M, Dh, Nq)
    return output.view(B, M * Dh, Nq).transpose(1, 2)  # (B, Nq, M·Dh)


class MSDeformAttn(nn.Module):
    """(query (B, Nq, D), reference points (B, Nq, L, 2) in [0, 1], values (B, S, D)) -> (B, Nq, D)."""

    def __init__(self, dim: int, *, num_heads: int = 8, num_levels: int = 3, num_points: int = 4) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        self.num_heads, self.num_levels, self.num_points = num_heads, num_levels, num_points
        self.sampling_offsets = nn.Linear(dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR's initialisation: offsets start on a ring of head-specific directions, the
        k-th point k pixels out; uniform attention."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        directions = torch.stack([angles.cos(), angles.sin()], -1)  # (M, 2)
        directions = directions / directions.abs().max(-1, keepdim=True).values
        ring = directions[:, None, None, :].repeat(1, self.num_levels, self.num_points, 1)  # (M, L, P, 2)
        ring = ring * torch.arange(1, self.num_points + 1, dtype=torch.float32)[None, None, :, None]
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(ring.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self, query: Tensor, reference_points: Tensor, values: Tensor, spatial_shapes: list[tuple[int, int]]
    ) -> Tensor:
        B, Nq, D = query.shape
        M, L, P = self.num_heads, self.num_levels, self.num_points
        value = self.value_proj(values).view(B, values.shape[1], M, D // M)  # (B, S, M, Dh)
        offsets = self.sampling_offsets(query).view(B, Nq, M, L, P, 2)  # in pixels of each level
        weights = self.attention_weights(query).view(B, Nq, M, L * P).softmax(-1).view(B, Nq, M, L, P)
        normaliser = torch.tensor([(w, h) for h, w in spatial_shapes], dtype=query.dtype, device=query.device)
        locations = reference_points[:, :, None, :, None, :] + offsets / normaliser[None, None, None, :, None, :]
        return self.output_proj(ms_deform_attn_sample(value, spatial_shapes, locations, weights))

"""Pixel decoders of Mask2Former (Cheng et al. 2022, arXiv:2112.01527, Sec. 3.2 and Table 4e).

Both map the backbone's maps [(B, D_i, H_i, W_i)] (finest first) to
* `multi_scale`: 3 maps (B, D, h_l, w_l), coarsest first, for the transformer decoder, and
* `mask_features`: (B, D, H_0, W_0) per-pixel embeddings at the finest map's stride.

The decoder's levels are the 3 coarsest maps (res3–res5 of a 4-map CNN); a backbone with fewer
maps (a plain ViT has one) gets the missing coarser levels by stride-2 3×3 convolutions of its
coarsest map, as Deformable DETR adds its extra level.

* `msdeform` (the paper's default): a 6-layer multi-scale deformable-attention encoder
  (`layers/ms_deform_attn.py`, plain PyTorch) over the 3 levels, then an FPN step down to the
  finer maps.
* `fpn`: MaskFormer's FPN (Lin et al. 2017): lateral 1×1 convs, top-down resize-and-add, 3×3 convs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pretrainlab.models.heads.seg_base import resize_to
from pretrainlab.models.layers.ms_deform_attn import MSDeformAttn

NUM_LEVELS = 3


def sine_position_embedding(height: int, width: int, dim: int, *, device: torch.device, dtype: torch.dtype) -> Tensor:
    """DETR's normalised sine embedding (Carion et al. 2020): (dim, H, W), y in the first half,
    x in the second, each interleaving sin / cos over frequencies 10000^(2i / (dim / 2))."""
    if dim % 4:
        raise ValueError(f"the sine position embedding needs dim divisible by 4, got {dim}")
    half = dim // 2
    y = torch.arange(1, height + 1, device=device, dtype=torch.float32) / (height + 1e-6) * 2 * math.pi
    x = torch.arange(1, width + 1, device=device, dtype=torch.float32) / (width + 1e-6) * 2 * math.pi
    frequencies = 10000 ** (2 * (torch.arange(half, device=device) // 2) / half)  # (half,)

    def embed(positions: Tensor) -> Tensor:  # (n,) -> (half, n)
        angles = positions[:, None] / frequencies  # (n, half)
        return torch.stack([angles[:, 0::2].sin(), angles[:, 1::2].cos()], dim=2).flatten(1).T

    pos_y = embed(y)[:, :, None].expand(-1, height, width)
    pos_x = embed(x)[:, None, :].expand(-1, height, width)
    return torch.cat([pos_y, pos_x]).to(dtype)  # (dim, H, W)


def group_norm(dim: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups, fewer when `dim` is not a multiple of 32 (small test widths)."""
    return nn.GroupNorm(math.gcd(32, dim), dim)


def conv_gn(in_dim: int, out_dim: int, kernel_size: int, *, stride: int = 1, relu: bool = False) -> nn.Sequential:
    """Conv ('same' padding, no bias) + GroupNorm (+ ReLU), the pixel decoders' unit."""
    conv = nn.Conv2d(in_dim, out_dim, kernel_size, stride, kernel_size // 2, bias=False)
    return nn.Sequential(conv, group_norm(out_dim), *([nn.ReLU()] if relu else []))


class PixelDecoder(nn.Module):
    """Shared bookkeeping: which maps feed the decoder levels and how the missing levels are made."""

    def __init__(self, in_channels: Sequence[int], dim: int) -> None:
        super().__init__()
        self.num_maps = len(in_channels)
        self.level_indices = list(range(max(self.num_maps - NUM_LEVELS, 0), self.num_maps))  # maps that are levels
        self.num_extra = NUM_LEVELS - len(self.level_indices)  # levels made by stride-2 convs

    def check_maps(self, maps: Sequence[Tensor]) -> None:
        if len(maps) != self.num_maps:
            raise ValueError(f"{type(self).__name__} expects {self.num_maps} maps, got {len(maps)}")


class FPNPixelDecoder(PixelDecoder):
    """MaskFormer's FPN pixel decoder (`fpn` option)."""

    def __init__(self, in_channels: Sequence[int], dim: int) -> None:
        super().__init__(in_channels, dim)
        coarsest = in_channels[-1]
        self.extra = nn.ModuleList(conv_gn(coarsest if i == 0 else dim, dim, 3, stride=2, relu=True)
                                   for i in range(self.num_extra))  # fmt: skip
        self.laterals = nn.ModuleList(conv_gn(c, dim, 1) for c in in_channels)
        self.outputs = nn.ModuleList(conv_gn(dim, dim, 3, relu=True) for _ in in_channels)
        self.mask_features = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, maps: Sequence[Tensor]) -> tuple[list[Tensor], Tensor]:
        self.check_maps(maps)
        outputs: list[Tensor] = []  # finest first once filled (coarse to fine)
        top = None
        for i in range(len(maps) - 1, -1, -1):  # top-down: coarse into fine
            lateral = self.laterals[i](maps[i])
            top = lateral if top is None else lateral + resize_to(top, lateral.shape[-2:])
            outputs.insert(0, self.outputs[i](top))
        extra: list[Tensor] = []
        for conv in self.extra:
            extra.append(conv(maps[-1] if not extra else extra[-1]))
        levels = [outputs[i] for i in self.level_indices] + extra  # finest first
        return levels[::-1], self.mask_features(outputs[0])


class MSDeformEncoderLayer(nn.Module):
    """Deformable self-attention over all levels' pixels + FFN, post-norm."""

    def __init__(self, dim: int, *, num_heads: int, ffn_dim: int, num_points: int) -> None:
        super().__init__()
        self.attn = MSDeformAttn(dim, num_heads=num_heads, num_levels=NUM_LEVELS, num_points=num_points)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Linear(ffn_dim, dim))
        self.norm_attn = nn.LayerNorm(dim)
        self.norm_ffn = nn.LayerNorm(dim)

    def forward(self, x: Tensor, pos: Tensor, reference_points: Tensor, shapes: list[tuple[int, int]]) -> Tensor:
        x = self.norm_attn(x + self.attn(x + pos, reference_points, x, shapes))
        return self.norm_ffn(x + self.ffn(x))


class MSDeformPixelDecoder(PixelDecoder):
    """Mask2Former's default pixel decoder (`msdeform` option)."""

    def __init__(
        self, in_channels: Sequence[int], dim: int, *, num_layers: int = 6, num_heads: int = 8,
        ffn_dim: int = 1024, num_points: int = 4,
    ) -> None:  # fmt: skip
        super().__init__(in_channels, dim)
        coarsest = in_channels[-1]
        self.input_projs = nn.ModuleList(conv_gn(in_channels[i], dim, 1) for i in self.level_indices)
        self.extra = nn.ModuleList(conv_gn(coarsest if i == 0 else dim, dim, 3, stride=2)
                                   for i in range(self.num_extra))  # fmt: skip
        self.level_embed = nn.Parameter(torch.randn(NUM_LEVELS, dim) * 0.02)
        self.layers = nn.ModuleList(
            MSDeformEncoderLayer(dim, num_heads=num_heads, ffn_dim=ffn_dim, num_points=num_points)
            for _ in range(num_layers)
        )
        finer = range(min(self.level_indices))  # maps below the decoder levels, reached by an FPN step
        self.laterals = nn.ModuleList(conv_gn(in_channels[i], dim, 1) for i in finer)
        self.outputs = nn.ModuleList(conv_gn(dim, dim, 3, relu=True) for _ in finer)
        self.mask_features = nn.Conv2d(dim, dim, 1)

    @staticmethod
    def reference_points(shapes: list[tuple[int, int]], device: torch.device, dtype: torch.dtype) -> Tensor:
        """Pixel centres of every level, normalised to [0, 1]: (S, 2) as (x, y)."""
        points = []
        for h, w in shapes:
            y, x = torch.meshgrid((torch.arange(h, device=device) + 0.5) / h,
                                  (torch.arange(w, device=device) + 0.5) / w, indexing="ij")  # fmt: skip
            points.append(torch.stack([x.flatten(), y.flatten()], -1))
        return torch.cat(points).to(dtype)

    def forward(self, maps: Sequence[Tensor]) -> tuple[list[Tensor], Tensor]:
        self.check_maps(maps)
        sources = [proj(maps[i]) for proj, i in zip(self.input_projs, self.level_indices)]
        extra_input = maps[-1]
        for conv in self.extra:
            extra_input = conv(extra_input)
            sources.append(extra_input)
        sources = sources[::-1]  # coarsest first, as the transformer decoder visits them
        B, D = sources[0].shape[:2]
        shapes = [tuple(s.shape[-2:]) for s in sources]
        tokens = torch.cat([s.flatten(2).transpose(1, 2) for s in sources], dim=1)  # (B, S, D)
        pos = torch.cat([
            sine_position_embedding(h, w, D, device=tokens.device, dtype=tokens.dtype).flatten(1).T + embed
            for embed, (h, w) in zip(self.level_embed, shapes)
        ])[None]  # (1, S, D)
        reference = self.reference_points(shapes, tokens.device, tokens.dtype)  # (S, 2)
        reference = reference[None, :, None, :].expand(B, -1, NUM_LEVELS, -1)  # (B, S, L, 2): same point on every level
        for layer in self.layers:
            tokens = layer(tokens, pos, reference, shapes)
        levels = [t.transpose(1, 2).reshape(B, D, h, w) for t, (h, w) in
                  zip(tokens.split([h * w for h, w in shapes], dim=1), shapes)]  # fmt: skip
        top = levels[-1]  # the finest level (extra levels are coarser than every backbone map)
        for i in range(len(self.laterals) - 1, -1, -1):  # FPN step to the finer maps
            lateral = self.laterals[i](maps[i])
            top = self.outputs[i](lateral + resize_to(top, lateral.shape[-2:]))
        return levels, self.mask_features(top)

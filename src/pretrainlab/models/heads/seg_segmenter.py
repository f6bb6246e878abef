"""Segmenter's mask transformer decoder (Strudel et al. 2021, arXiv:2105.05633, Sec. 3.2).

The last map's cells are patch tokens; K learnable class embeddings join them, a few
transformer layers process the (N + K) tokens, and the logits are the scalar products
of the L2-normalised projected patch and class embeddings, (B, N, K), layer-normed over
K and reshaped to (B, K, h, w).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from pretrainlab.models.heads.seg_base import SEG_HEADS, SegHead, SegHeadConfig


class SegmenterHead(SegHead):
    """(maps [..., (B, D, h, w)]) -> logits (B, K, h, w) from the last map."""

    def __init__(
        self,
        in_channels: Sequence[int],
        strides: Sequence[int],
        num_classes: int,
        *,
        embed_dim: int = 192,
        depth: int = 2,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(in_channels, strides, num_classes)
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} must be divisible by num_heads={num_heads}")
        self.output_stride = strides[-1]
        self.map_indices = [len(in_channels) - 1]
        self.proj_decoder = nn.Linear(in_channels[-1], embed_dim)
        self.class_embed = nn.Parameter(torch.zeros(1, num_classes, embed_dim))  # (1, K, E)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, proj_drop=dropout, attn_drop=dropout)
            for _ in range(depth)
        )
        self.decoder_norm = nn.LayerNorm(embed_dim)
        self.proj_patch = nn.Linear(embed_dim, embed_dim, bias=False)
        self.proj_classes = nn.Linear(embed_dim, embed_dim, bias=False)
        self.mask_norm = nn.LayerNorm(num_classes)
        self.apply(_init_weights)
        nn.init.trunc_normal_(self.class_embed, std=0.02)

    def forward(self, maps: Sequence[Tensor]) -> Tensor:
        self.check_maps(maps)
        x = maps[-1]
        batch, _, height, width = x.shape
        tokens = self.proj_decoder(x.flatten(2).transpose(1, 2))  # (B, N, E)
        tokens = torch.cat([tokens, self.class_embed.expand(batch, -1, -1)], dim=1)  # (B, N + K, E)
        for block in self.blocks:
            tokens = block(tokens)
        tokens = self.decoder_norm(tokens)
        patches = F.normalize(self.proj_patch(tokens[:, : -self.num_classes]), dim=-1)  # (B, N, E)
        classes = F.normalize(self.proj_classes(tokens[:, -self.num_classes :]), dim=-1)  # (B, K, E)
        masks = self.mask_norm(patches @ classes.transpose(1, 2))  # (B, N, K)
        return masks.transpose(1, 2).reshape(batch, self.num_classes, height, width)  # (B, K, h, w)


def _init_weights(module: nn.Module) -> None:
    """Segmenter's init: truncated normal (std 0.02) linear weights, zero biases, unit layer norms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class SegmenterHeadConfig(SegHeadConfig):
    """Segmenter mask transformer on the last map: by default as the paper's, 2 layers of the
    encoder's width d with d / 64 heads."""

    name: Literal["segmenter"]
    embed_dim: int | None = Field(None, ge=1, description="null = the width of the map it reads (the encoder's)")
    depth: int = Field(2, ge=1)
    num_heads: int | None = Field(None, ge=1, description="null = embed_dim / 64 (at least 1)")
    mlp_ratio: float = Field(4.0, gt=0.0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


@SEG_HEADS.register(SegmenterHeadConfig)
def build_segmenter(
    config: SegmenterHeadConfig,
    channels: Sequence[int],
    strides: Sequence[int],
    num_classes: int,
    *,
    decoder_width: int | None = None,  # unused: the width comes from the config
) -> SegmenterHead:
    embed_dim = config.embed_dim or channels[-1]
    num_heads = config.num_heads or max(1, embed_dim // 64)
    options = config.model_dump(exclude={"name", "embed_dim", "num_heads"})
    return SegmenterHead(channels, strides, num_classes, embed_dim=embed_dim, num_heads=num_heads, **options)

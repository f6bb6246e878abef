"""SegFormer's all-MLP decoder (Xie et al. 2021, arXiv:2105.15203, Sec. 3.2), as MMSeg's
`SegformerHead`: every map is projected to `embed_dim` (1×1 conv + BN + ReLU), resized
to the finest map, concatenated, fused (1×1 conv + BN + ReLU) and classified (dropout +
1×1 conv)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from pretrainlab.models.heads.seg_base import SEG_HEADS, SegHead, SegHeadConfig, resize_to
from pretrainlab.models.layers.conv_bn_act import ConvBnAct


class SegFormerHead(SegHead):
    """(maps [(B, D_i, H_i, W_i)], finest first) -> logits (B, K, H_0, W_0)."""

    def __init__(
        self,
        in_channels: Sequence[int],
        strides: Sequence[int],
        num_classes: int,
        *,
        embed_dim: int = 256,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(in_channels, strides, num_classes)
        self.output_stride = strides[0]
        self.projections = nn.ModuleList(ConvBnAct(c, embed_dim, kernel_size=1) for c in in_channels)
        self.fuse = ConvBnAct(embed_dim * len(in_channels), embed_dim, kernel_size=1)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(embed_dim, num_classes, kernel_size=1)

    def forward(self, maps: Sequence[Tensor]) -> Tensor:
        self.check_maps(maps)
        size = maps[0].shape[-2:]
        projected = [resize_to(project(m), size) for project, m in zip(self.projections, maps)]  # [(B, E, H_0, W_0)]
        fused = self.fuse(torch.cat(projected, dim=1))  # (B, E, H_0, W_0)
        return self.classifier(self.dropout(fused))  # (B, K, H_0, W_0)


class SegFormerHeadConfig(SegHeadConfig):
    """SegFormer all-MLP decoder over all maps."""

    name: Literal["segformer"]
    embed_dim: int = Field(256, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)


@SEG_HEADS.register(SegFormerHeadConfig)
def build_segformer(config: SegFormerHeadConfig, channels: Sequence[int], strides: Sequence[int], num_classes: int) -> SegFormerHead:
    return SegFormerHead(channels, strides, num_classes, embed_dim=config.embed_dim, dropout=config.dropout)

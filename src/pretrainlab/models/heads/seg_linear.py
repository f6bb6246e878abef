"""Linear segmentation head of DINOv2 (Oquab et al. 2023, arXiv:2304.07193, Sec. 7.4):
BatchNorm + 1×1 convolution on the last map, or on the last `num_maps` maps resized
(bilinear) to the size of the first of them and concatenated (MMSeg `BNHead` with
`input_transform="resize_concat"`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from pretrainlab.models.heads.seg_base import SEG_HEADS, SegHead, SegHeadConfig, resize_to


class SegLinearHead(SegHead):
    """(maps [(B, D_i, H_i, W_i)]) -> logits (B, K, H_j, W_j), j the first of the last `num_maps` maps."""

    def __init__(
        self,
        in_channels: Sequence[int],
        strides: Sequence[int],
        num_classes: int,
        *,
        num_maps: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(in_channels, strides, num_classes)
        if not 1 <= num_maps <= len(in_channels):
            raise ValueError(f"num_maps must be in [1, {len(in_channels)}] (the backbone's maps), got {num_maps}")
        self.map_indices = list(range(len(in_channels) - num_maps, len(in_channels)))
        self.output_stride = strides[self.map_indices[0]]
        channels = sum(in_channels[i] for i in self.map_indices)
        self.bn = nn.BatchNorm2d(channels)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, maps: Sequence[Tensor]) -> Tensor:
        self.check_maps(maps)
        size = maps[self.map_indices[0]].shape[-2:]
        x = torch.cat([resize_to(maps[i], size) for i in self.map_indices], dim=1)  # (B, sum D_i, H_j, W_j)
        return self.classifier(self.dropout(self.bn(x)))  # (B, K, H_j, W_j)


class SegLinearHeadConfig(SegHeadConfig):
    """DINOv2 linear head: BN + 1×1 conv on the last map or the last `num_maps` maps."""

    name: Literal["seg_linear"]
    num_maps: int = Field(1, ge=1, description="concatenate the last n maps, resized to the first of them")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


@SEG_HEADS.register(SegLinearHeadConfig)
def build_seg_linear(
    config: SegLinearHeadConfig,
    channels: Sequence[int],
    strides: Sequence[int],
    num_classes: int,
    *,
    decoder_width: int | None = None,  # unused: the width comes from the config
) -> SegLinearHead:
    return SegLinearHead(channels, strides, num_classes, num_maps=config.num_maps, dropout=config.dropout)

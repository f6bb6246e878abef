"""UPerNet head (Xiao et al. 2018, arXiv:1807.10221), as MMSeg's `UPerHead`.

A pyramid pooling module (PSPNet, Zhao et al. 2017) on the last map: adaptive average
pools to `pool_scales`, 1×1 conv + BN + ReLU each, resized back and concatenated with the
map, then a 3×3 conv + BN + ReLU. An FPN (Lin et al. 2017) over all maps: 1×1 lateral
convs, top-down resize-and-add, 3×3 convs; every level is resized to the finest map,
concatenated, fused by a 3×3 conv + BN + ReLU and classified (dropout + 1×1 conv).
With a single map (plain ViT) this is PPM + fuse.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from pretrainlab.models.heads.seg_base import SEG_HEADS, SegHead, SegHeadConfig, resize_to
from pretrainlab.models.layers.conv_bn_act import ConvBnAct


class UperHead(SegHead):
    """(maps [(B, D_i, H_i, W_i)], finest first) -> logits (B, K, H_0, W_0)."""

    def __init__(
        self,
        in_channels: Sequence[int],
        strides: Sequence[int],
        num_classes: int,
        *,
        channels: int = 256,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        dropout: float = 0.1,
    ) -> None:
        super().__init__(in_channels, strides, num_classes)
        self.output_stride = strides[0]
        last = in_channels[-1]
        self.pools = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(scale), ConvBnAct(last, channels, kernel_size=1)) for scale in pool_scales
        )
        self.ppm_bottleneck = ConvBnAct(last + len(pool_scales) * channels, channels, kernel_size=3)
        self.laterals = nn.ModuleList(ConvBnAct(c, channels, kernel_size=1) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvBnAct(channels, channels, kernel_size=3) for _ in in_channels[:-1])
        self.fpn_bottleneck = ConvBnAct(len(in_channels) * channels, channels, kernel_size=3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)

    def pyramid_pooling(self, x: Tensor) -> Tensor:
        """(B, D, h, w) -> (B, channels, h, w)."""
        pooled = [resize_to(pool(x), x.shape[-2:]) for pool in self.pools]  # [(B, channels, h, w)]
        return self.ppm_bottleneck(torch.cat([x, *pooled], dim=1))

    def features(self, maps: Sequence[Tensor]) -> Tensor:
        """The fused features before dropout and classifier: maps -> (B, channels, H_0, W_0)."""
        self.check_maps(maps)
        levels = [lateral(m) for lateral, m in zip(self.laterals, maps[:-1])] + [self.pyramid_pooling(maps[-1])]
        for i in range(len(levels) - 1, 0, -1):  # top-down: coarse into fine
            levels[i - 1] = levels[i - 1] + resize_to(levels[i], levels[i - 1].shape[-2:])
        outputs = [conv(level) for conv, level in zip(self.fpn_convs, levels[:-1])] + [levels[-1]]
        size = outputs[0].shape[-2:]
        return self.fpn_bottleneck(torch.cat([resize_to(o, size) for o in outputs], dim=1))  # (B, C, H_0, W_0)

    def forward(self, maps: Sequence[Tensor]) -> Tensor:
        return self.classifier(self.dropout(self.features(maps)))  # (B, K, H_0, W_0)


class UperHeadConfig(SegHeadConfig):
    """UPerNet: PPM on the last map + FPN over all maps."""

    name: Literal["uper"]
    channels: int = Field(256, ge=1)
    pool_scales: tuple[int, ...] = (1, 2, 3, 6)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)


@SEG_HEADS.register(UperHeadConfig)
def build_uper(
    config: UperHeadConfig,
    channels: Sequence[int],
    strides: Sequence[int],
    num_classes: int,
    *,
    decoder_width: int | None = None,  # unused: the width comes from the config
) -> UperHead:
    return UperHead(channels, strides, num_classes, channels=config.channels, pool_scales=config.pool_scales, dropout=config.dropout)

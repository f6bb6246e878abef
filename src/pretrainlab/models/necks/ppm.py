"""Pyramid pooling necks of DDRNet and PIDNet.

DAPPM: Hong et al. 2021, "Deep Dual-resolution Networks for Real-time and Accurate
Semantic Segmentation of Road Scenes", Sec. 3.3 (Deep Aggregation Pyramid Pooling Module).
PAPPM: Xu et al. 2023, "PIDNet: A Real-time Semantic Segmentation Network Inspired by
PID Controllers", Sec. 3.3 (Parallel Aggregation PPM, used by PIDNet-S / M).

Both take a map (B, C_in, H, W) and return (B, out_channels, H, W). Five scales, each a
pre-activation BN-ReLU-1×1 conv to `branch_channels`:
    scale0  the map itself
    scale1  avg pool kernel 5,  stride 2, padding 2
    scale2  avg pool kernel 9,  stride 4, padding 4
    scale3  avg pool kernel 17, stride 8, padding 8
    scale4  global average pool
The pooled scales are resized back to (H, W) (bilinear, align_corners=False).
The output is BN-ReLU-1×1 compression of the concatenated scales + a BN-ReLU-1×1 shortcut
of the input.

Tiny maps: with padding = kernel // 2 every pool gives at least one output cell, so a
1×1 or 2×2 map (the 1/64 map of a 32–96 px image) works. `count_include_pad=True` (the
PyTorch default, as in the official DDRNet / PIDNet code) divides every window by the
full kernel area, so on a map smaller than the kernel the pooled values shrink
(a 1×1 map under the 17×17 pool is divided by 289); the BN that follows rescales them.
`count_include_pad=False` averages over the valid cells only.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.nn import functional as F

from pretrainlab.models.backbones.base import Backbone
from pretrainlab.models.layers.conv_bn_act import BnActConv
from pretrainlab.models.necks.base import NECKS, Neck, NeckConfig

POOL_SETTINGS: tuple[tuple[int, int, int], ...] = ((5, 2, 2), (9, 4, 4), (17, 8, 8))  # (kernel, stride, padding)
NUM_SCALES = 5  # identity, three average pools, global pool


def _upsample(x: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class _PyramidPooling(Neck):
    """The five scales, the compression and the shortcut shared by DAPPM and PAPPM."""

    def __init__(self, in_channels: int, branch_channels: int, out_channels: int, count_include_pad: bool) -> None:
        super().__init__()
        sizes = {"in_channels": in_channels, "branch_channels": branch_channels, "out_channels": out_channels}
        for name, value in sizes.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.in_channels = in_channels
        self.branch_channels = branch_channels
        self.out_channels = out_channels
        self.scale0 = BnActConv(in_channels, branch_channels, 1)
        pools: list[nn.Module] = [
            nn.AvgPool2d(kernel, stride=stride, padding=padding, count_include_pad=count_include_pad)
            for kernel, stride, padding in POOL_SETTINGS
        ]
        pools.append(nn.AdaptiveAvgPool2d(1))
        self.pools = nn.ModuleList(pools)
        self.scales = nn.ModuleList(BnActConv(in_channels, branch_channels, 1) for _ in pools)
        self.compression = BnActConv(NUM_SCALES * branch_channels, out_channels, 1)
        self.shortcut = BnActConv(in_channels, out_channels, 1)

    def pooled_scales(self, x: Tensor) -> list[Tensor]:
        """scale1..scale4 of x (B, C_in, H, W), each resized to (B, branch_channels, H, W)."""
        size = (x.shape[-2], x.shape[-1])
        return [_upsample(scale(pool(x)), size) for pool, scale in zip(self.pools, self.scales)]


class DAPPM(_PyramidPooling):
    """Deep Aggregation PPM (DDRNet): scales aggregated hierarchically.

    y0 = scale0(x); y_i = process_i(up(scale_i(x)) + y_{i-1}) with process_i a BN-ReLU-3×3 conv;
    out = compression(cat[y0, ..., y4]) + shortcut(x).
    Shapes: (B, in_channels, H, W) -> (B, out_channels, H, W).
    """

    def __init__(
        self, in_channels: int, branch_channels: int, out_channels: int, count_include_pad: bool = True
    ) -> None:
        super().__init__(in_channels, branch_channels, out_channels, count_include_pad)
        self.process = nn.ModuleList(BnActConv(branch_channels, branch_channels, 3) for _ in range(NUM_SCALES - 1))

    def forward(self, feature_map: Tensor) -> Tensor:  # (B, C_in, H, W)
        self.check_input(feature_map)
        outputs = [self.scale0(feature_map)]  # [(B, branch, H, W)]
        for upsampled, process in zip(self.pooled_scales(feature_map), self.process):
            outputs.append(process(upsampled + outputs[-1]))
        return self.compression(torch.cat(outputs, dim=1)) + self.shortcut(feature_map)  # (B, out, H, W)


class PAPPM(_PyramidPooling):
    """Parallel Aggregation PPM (PIDNet-S / M): the pooled scales processed together.

    y0 = scale0(x); z = grouped BN-ReLU-3×3 conv (groups 4) of cat[up(scale_i(x)) + y0 for i = 1..4];
    out = compression(cat[y0, z]) + shortcut(x).
    Shapes: (B, in_channels, H, W) -> (B, out_channels, H, W).
    """

    def __init__(
        self, in_channels: int, branch_channels: int, out_channels: int, count_include_pad: bool = True
    ) -> None:
        super().__init__(in_channels, branch_channels, out_channels, count_include_pad)
        num_pooled = NUM_SCALES - 1
        self.process = BnActConv(num_pooled * branch_channels, num_pooled * branch_channels, 3, groups=num_pooled)

    def forward(self, feature_map: Tensor) -> Tensor:  # (B, C_in, H, W)
        self.check_input(feature_map)
        base = self.scale0(feature_map)  # (B, branch, H, W)
        pooled = [upsampled + base for upsampled in self.pooled_scales(feature_map)]
        processed = self.process(torch.cat(pooled, dim=1))  # (B, 4 * branch, H, W)
        return self.compression(torch.cat([base, processed], dim=1)) + self.shortcut(feature_map)  # (B, out, H, W)



class _PyramidPoolingConfig(NeckConfig):
    branch_channels: int = Field(96, ge=1, description="channels of each pooling branch (DDRNet 128, PIDNet-S 96)")
    out_channels: int | None = Field(
        None, ge=1, description="null = channels of the backbone's finest map (DDRNet: 4p, that of its 1/8 map)"
    )
    count_include_pad: bool = True

    def sizes(self, backbone: Backbone) -> tuple[int, int, int]:
        """(in, branch, out) channels of this neck on `backbone`'s final map."""
        in_channels = backbone.out_channels[backbone.final_map_index]
        return in_channels, self.branch_channels, self.out_channels or backbone.out_channels[0]


class DAPPMConfig(_PyramidPoolingConfig):
    """Deep Aggregation Pyramid Pooling (DDRNet) on the backbone's final map."""

    name: Literal["dappm"]


class PAPPMConfig(_PyramidPoolingConfig):
    """Parallel Aggregation Pyramid Pooling (PIDNet-S / M) on the backbone's final map."""

    name: Literal["pappm"]


@NECKS.register(DAPPMConfig)
def build_dappm(config: DAPPMConfig, backbone: Backbone) -> DAPPM:
    return DAPPM(*config.sizes(backbone), count_include_pad=config.count_include_pad)


@NECKS.register(PAPPMConfig)
def build_pappm(config: PAPPMConfig, backbone: Backbone) -> PAPPM:
    return PAPPM(*config.sizes(backbone), count_include_pad=config.count_include_pad)

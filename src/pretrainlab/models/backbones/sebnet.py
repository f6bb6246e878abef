"""SEBNet: a dual-resolution real-time segmentation CNN of the DDRNet / PIDNet family.

Hong et al. 2021, "Deep Dual-resolution Networks for Real-time and Accurate Semantic
Segmentation of Road Scenes" (DDRNet); Xu et al. 2023, "PIDNet: A Real-time Semantic
Segmentation Network Inspired by PID Controllers".

Layout for an image (B, C, H, W), with p = `planes` and strides relative to the input:

    stem        two 3×3 stride-2 conv-BN-ReLU                    p   @ 1/4
    stage1      layers[0] BasicBlocks                             p   @ 1/4
    stage2      layers[1] BasicBlocks (first strided)            2p   @ 1/8
    stage3      low:  layers[2] BasicBlocks (first strided)      4p   @ 1/16
                high: layers[2] BasicBlocks                      2p   @ 1/8
                bilateral fusion
    stage4      low:  layers[3] BasicBlocks (first strided)      8p   @ 1/32
                high: layers[3] BasicBlocks                      2p   @ 1/8
                bilateral fusion
    context     low:  `num_context_blocks` Bottlenecks (first strided, expansion 2)  16p @ 1/64
                high: one Bottleneck (expansion 2)                                   4p @ 1/8

Bilateral fusion (DDRNet): both branches read each other's *pre-fusion* output,
    low  <- ReLU(low  + BN(conv3×3 stride 2 (...)(high)))       one strided conv per halving
    high <- ReLU(high + resize(BN(conv1×1(low)), size of high))  bilinear, align_corners=False
Upsampling always targets the exact size of the high-resolution map, so any input size
works (e.g. 48×80 or 32×32). Every halving is a 3×3/1×1 conv with padding k // 2,
i.e. H -> ceil(H / 2) on every path, so the strided fusion convs land on the size of
the low branch by construction.

`Features`:
    maps    [high 1/8 (4p), low 1/16 (4p), low 1/32 (8p), context 1/64 (16p)], finest first;
            the 1/16 and 1/32 maps are taken after fusion. Strides are nominal: the
            1/64 map of a 96×96 image is 2×2 (ceil at every halving).
    pooled  concat(global average of the high 1/8 map, global average of the 1/64
            context map): (B, 4p + 16p). Both branch ends feed it, so every parameter
            receives a gradient from a pooled-feature loss.
    tokens  None.

A DDRNet-style segmentation model applies a pyramid pooling neck (DAPPM / PAPPM in
`pretrainlab.models.necks.ppm`) to `maps[final_map_index]` (the 1/64 context map, 16p
channels) with out_channels = 4p, upsamples it to the 1/8 map and adds both.

Sizes (widths as PIDNet-S / M / L, depths PIDNet-like, no P/I/D attention branches):

    size  planes  layers        context blocks  parameters (in_chans 3)
    s     32      (2, 2, 3, 3)  2               7,025,248   (PIDNet-S: 7.6 M)
    m     64      (2, 2, 3, 3)  2               28,069,056  (PIDNet-M: 34.4 M)
    l     64      (3, 3, 4, 4)  2               34,930,624  (PIDNet-L: 36.9 M)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from pydantic import Field

from pretrainlab.models.backbones.base import BACKBONES, Backbone, BackboneConfig, Features, global_average
from pretrainlab.models.layers.conv_bn_act import ConvBnAct
from pretrainlab.models.layers.residual import BasicBlock, Bottleneck


@dataclass(frozen=True)
class SEBNetSize:
    """Width `planes` (p in the module docstring), BasicBlocks per stage 1-4, context Bottlenecks."""

    planes: int
    layers: tuple[int, int, int, int]
    num_context_blocks: int


SEBNET_SIZES: dict[str, SEBNetSize] = {
    "s": SEBNetSize(planes=32, layers=(2, 2, 3, 3), num_context_blocks=2),
    "m": SEBNetSize(planes=64, layers=(2, 2, 3, 3), num_context_blocks=2),
    "l": SEBNetSize(planes=64, layers=(3, 3, 4, 4), num_context_blocks=2),
}


def _basic_stage(in_channels: int, out_channels: int, num_blocks: int, stride: int) -> nn.Sequential:
    blocks = [BasicBlock(in_channels, out_channels, stride=stride)]
    blocks += [BasicBlock(out_channels, out_channels) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)


class BilateralFusion(nn.Module):
    """Exchange between a high-res map (B, C_h, H, W) and a low-res map (B, C_l, H / 2^k, W / 2^k).

    high -> low: k strided 3×3 conv-BN (ReLU between them, none after the last);
    low -> high: 1×1 conv-BN, bilinear resize to (H, W). Both sums are followed by ReLU.
    """

    def __init__(self, high_channels: int, low_channels: int, num_halvings: int) -> None:
        super().__init__()
        down: list[nn.Module] = []
        channels = high_channels
        for i in range(num_halvings):
            is_last = i == num_halvings - 1
            next_channels = low_channels if is_last else channels * 2
            down.append(ConvBnAct(channels, next_channels, 3, stride=2, use_act=not is_last))
            channels = next_channels
        self.down = nn.Sequential(*down)
        self.compress = ConvBnAct(low_channels, high_channels, 1, use_act=False)

    def forward(self, high: Tensor, low: Tensor) -> tuple[Tensor, Tensor]:
        to_high = F.interpolate(self.compress(low), size=high.shape[-2:], mode="bilinear", align_corners=False)
        return F.relu(high + to_high), F.relu(low + self.down(high))


class SEBNet(Backbone):
    """Dual-resolution CNN backbone: (B, in_chans, H, W) -> `Features` (see module docstring).

    Args:
        size: 's', 'm' or 'l' (see `SEBNET_SIZES`).
        in_chans: number of input channels (1, 3 or 4 are typical).
        zero_init_residual: start the last BN of every residual branch at γ = 0, so each block
            begins as its shortcut (Goyal et al. 2017; timm's `zero_init_last`). With DDRNet's
            plain init (False) the ~30 stacked blocks of a random SEBNet-s give pooled features
            that barely tell two crops of one image from crops of others, and DINO has no
            signal to bootstrap from (README, "W1").
    """

    def __init__(
        self, size: Literal["s", "m", "l"] = "s", in_chans: int = 3, *, zero_init_residual: bool = True
    ) -> None:
        super().__init__()
        if size not in SEBNET_SIZES:
            raise ValueError(f"unknown SEBNet size {size!r}; expected one of {sorted(SEBNET_SIZES)}")
        if in_chans < 1:
            raise ValueError(f"in_chans must be >= 1, got {in_chans}")
        cfg = SEBNET_SIZES[size]
        p = cfg.planes
        self.size = size
        self.config = cfg
        self.in_chans = in_chans
        self.patch_size = None
        self.out_channels = [4 * p, 4 * p, 8 * p, 16 * p]
        self.strides = [8, 16, 32, 64]
        self.final_map_index = 3  # the 1/64 context map, where DDRNet puts its DAPPM
        self.embed_dim = 4 * p + 16 * p

        self.stem = nn.Sequential(ConvBnAct(in_chans, p, 3, stride=2), ConvBnAct(p, p, 3, stride=2))
        self.stage1 = _basic_stage(p, p, cfg.layers[0], stride=1)
        self.stage2 = _basic_stage(p, 2 * p, cfg.layers[1], stride=2)
        self.low3 = _basic_stage(2 * p, 4 * p, cfg.layers[2], stride=2)
        self.high3 = _basic_stage(2 * p, 2 * p, cfg.layers[2], stride=1)
        self.fuse3 = BilateralFusion(2 * p, 4 * p, num_halvings=1)
        self.low4 = _basic_stage(4 * p, 8 * p, cfg.layers[3], stride=2)
        self.high4 = _basic_stage(2 * p, 2 * p, cfg.layers[3], stride=1)
        self.fuse4 = BilateralFusion(2 * p, 8 * p, num_halvings=2)
        context = [Bottleneck(8 * p, 8 * p, stride=2)]
        context += [Bottleneck(16 * p, 8 * p) for _ in range(cfg.num_context_blocks - 1)]
        self.low_context = nn.Sequential(*context)
        self.high_context = Bottleneck(2 * p, 2 * p)
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, BasicBlock | Bottleneck):
                    nn.init.zeros_(module.last_bn.weight)

    def forward(self, images: Tensor) -> Features:  # images (B, C, H, W)
        self.check_input(images)
        x = self.stage2(self.stage1(self.stem(images)))  # (B, 2p, H/8, W/8)
        high, low = self.fuse3(self.high3(x), self.low3(x))  # (B, 2p, H/8, W/8), (B, 4p, H/16, W/16)
        low16 = low
        high, low = self.fuse4(self.high4(high), self.low4(low))  # (B, 2p, H/8, W/8), (B, 8p, H/32, W/32)
        low32 = low
        context = self.low_context(low)  # (B, 16p, H/64, W/64)
        high = self.high_context(high)  # (B, 4p, H/8, W/8)
        pooled = torch.cat([global_average(high), global_average(context)], dim=1)  # (B, 4p + 16p)
        return Features(pooled=pooled, maps=[high, low16, low32, context], tokens=None)

    def map_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Exact (H_i, W_i) of each entry of `maps` for an input of height × width."""
        sizes = []
        h, w = height, width
        for halvings in (3, 1, 1, 1):
            for _ in range(halvings):
                h, w = math.ceil(h / 2), math.ceil(w / 2)
            sizes.append((h, w))
        return sizes


class SEBNetConfig(BackboneConfig):
    """Dual-resolution real-time segmentation CNN (DDRNet / PIDNet family)."""

    name: Literal["sebnet"]
    size: Literal["s", "m", "l"] = "s"
    zero_init_residual: bool = Field(True, description="each residual block starts as its shortcut")

    def describe(self) -> str:
        return f"sebnet-{self.size}"


@BACKBONES.register(SEBNetConfig)
def build_sebnet(config: SEBNetConfig, in_chans: int) -> SEBNet:
    return SEBNet(config.size, in_chans=in_chans, zero_init_residual=config.zero_init_residual)

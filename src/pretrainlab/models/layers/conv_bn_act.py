"""Convolution + BatchNorm + ReLU, in the two orders CNN code needs.

`ConvBnAct` is the usual post-activation unit (ResNet, He et al. 2016).
`BnActConv` is the pre-activation unit used by the pyramid pooling necks of
DDRNet (Hong et al. 2021) and PIDNet (Xu et al. 2023): BN -> ReLU -> conv.
Convolutions have no bias because a BatchNorm is always next to them.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F


def _check_kernel(kernel_size: int) -> None:
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer ('same' padding), got {kernel_size}")


def same_padding_conv(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """`conv(x)` for a conv with padding k // 2; on a 1×1 map (B, C_in, 1, 1) -> (B, C_out, 1, 1) computed as a
    1×1 conv with the kernel's centre tap.

    With padding k // 2 only the centre tap meets the single input cell, whatever the stride, so
    this is exact (the other taps get a zero gradient, as they should). It works around a oneDNN
    bug (torch 2.x, CPU): under bf16 autocast the weight gradient of a *strided* 3×3 conv on a
    1×1 input is garbage (relative errors up to 1e33), which sent SEBNet's 1/64 context branch to
    NaN on 32-px crops. For stride 1 it is a speed-up: oneDNN computes all k² taps against the
    padding, and the backward of SEBNet-s's 256→256 3×3 convs on 1×1 maps (batch 128) took 4.5 ms
    each, a ninth of whose work is needed. `tests/models/test_conv_bn_act.py` checks both.
    """
    if x.shape[-2:] != (1, 1) or conv.kernel_size == (1, 1):
        return conv(x)
    centre = conv.kernel_size[0] // 2
    weight = conv.weight[:, :, centre : centre + 1, centre : centre + 1]  # (C_out, C_in / g, 1, 1)
    return F.conv2d(x, weight, groups=conv.groups)


class ConvBnAct(nn.Module):
    """conv(k×k, stride, padding k // 2, no bias) -> BN -> ReLU (optional).

    Shapes: (B, C_in, H, W) -> (B, C_out, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        use_act: bool = True,
    ) -> None:
        super().__init__()
        _check_kernel(kernel_size)
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True) if use_act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:  # (B, C_in, H, W) -> (B, C_out, ceil(H / s), ceil(W / s))
        return self.act(self.bn(same_padding_conv(self.conv, x)))


class BnActConv(nn.Module):
    """BN -> ReLU -> conv(k×k, stride 1, padding k // 2, no bias): shapes (B, C_in, H, W) -> (B, C_out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, groups: int = 1) -> None:
        super().__init__()
        _check_kernel(kernel_size)
        self.bn = nn.BatchNorm2d(in_channels)
        self.act = nn.ReLU(inplace=True)  # acts on the BN output, never on the caller's tensor
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2, groups=groups, bias=False
        )

    def forward(self, x: Tensor) -> Tensor:
        return same_padding_conv(self.conv, self.act(self.bn(x)))

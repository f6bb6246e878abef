"""Residual blocks of ResNet (He et al. 2016, "Deep Residual Learning for Image Recognition").

Used by SEBNet (DDRNet / PIDNet family). Both blocks end with ReLU(main + shortcut);
the shortcut is the identity when shapes agree, else a 1×1 strided conv + BN.
With a 3×3 conv at padding 1 and a 1×1 conv at padding 0, a stride-2 block maps
H to ceil(H / 2) on both paths, so odd sizes need no special care.
"""

from __future__ import annotations

from torch import Tensor, nn

from pretrainlab.models.layers.conv_bn_act import ConvBnAct


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    if in_channels == out_channels and stride == 1:
        return nn.Identity()
    return ConvBnAct(in_channels, out_channels, kernel_size=1, stride=stride, use_act=False)


class BasicBlock(nn.Module):
    """3×3 conv-BN-ReLU, 3×3 conv-BN, + shortcut, ReLU.

    Shapes: (B, C_in, H, W) -> (B, C_out, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = ConvBnAct(in_channels, out_channels, 3, stride=stride)
        self.conv2 = ConvBnAct(out_channels, out_channels, 3, use_act=False)
        self.shortcut = _shortcut(in_channels, out_channels, stride)
        self.act = nn.ReLU(inplace=True)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        """The BN closing the residual branch (zero-initialised for an identity start)."""
        return self.conv2.bn

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (strided), 1×1 expand to `planes * expansion`, + shortcut, ReLU.

    DDRNet / PIDNet use expansion 2 (ResNet uses 4).
    Shapes: (B, C_in, H, W) -> (B, planes * expansion, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(self, in_channels: int, planes: int, stride: int = 1, expansion: int = 2) -> None:
        super().__init__()
        self.out_channels = planes * expansion
        self.conv1 = ConvBnAct(in_channels, planes, 1)
        self.conv2 = ConvBnAct(planes, planes, 3, stride=stride)
        self.conv3 = ConvBnAct(planes, self.out_channels, 1, use_act=False)
        self.shortcut = _shortcut(in_channels, self.out_channels, stride)
        self.act = nn.ReLU(inplace=True)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        """The BN closing the residual branch (zero-initialised for an identity start)."""
        return self.conv3.bn

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x))

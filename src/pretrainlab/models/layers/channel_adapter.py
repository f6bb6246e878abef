"""A learned 1x1 convolution turning one input channel into the channels of a backbone.

The `learned` channel policy (`data.channel_policy: learned`) feeds single-channel images
(thermal, 16-bit grey) to a network built for 3 channels, e.g. one with RGB-pretrained
weights: instead of repeating the channel (the `copy` policy), this layer learns the map and
trains with the backbone. It starts as the copy: every weight 1, every bias 0, so at
initialisation `ChannelAdapter(3)(x)` equals `x.repeat(1, 3, 1, 1)` exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ChannelAdapter(nn.Conv2d):
    """1x1 convolution 1 -> `out_channels`, initialised to repeat its input channel.

    Args:
        out_channels: channels of the network that follows (3 for an RGB backbone).

    Shapes:
        (B, 1, H, W) -> (B, out_channels, H, W).
    """

    def __init__(self, out_channels: int = 3) -> None:
        if out_channels < 1:
            raise ValueError(f"out_channels={out_channels} is not valid; expected >= 1")
        super().__init__(1, out_channels, kernel_size=1, bias=True)

    def reset_parameters(self) -> None:
        """The copy: weight 1, bias 0 (`nn.Conv2d.__init__` calls this too)."""
        with torch.no_grad():
            self.weight.fill_(1.0)
            self.bias.fill_(0.0)

    def forward(self, images: Tensor) -> Tensor:  # images (B, 1, H, W)
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"ChannelAdapter expects images (B, 1, H, W), got shape {tuple(images.shape)}")
        return super().forward(images)  # (B, out_channels, H, W)

"""The segmentor used for finetuning: backbone → segmentation head → logits at input size.

A backbone whose parameters are all frozen (`engine/freeze.py`) runs in eval mode (BN
running statistics, no dropout) under `torch.no_grad()`, whatever `train()` is called
with, so its maps are a fixed function of the image and can be cached.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pretrainlab.engine.freeze import is_frozen
from pretrainlab.models.backbones.base import Backbone
from pretrainlab.models.heads.seg_base import SegHead, resize_to


class Segmentor(nn.Module):
    """images (B, C, H, W) -> logits (B, K, H, W)."""

    def __init__(self, backbone: Backbone, head: SegHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def train(self, mode: bool = True) -> Segmentor:
        super().train(mode)
        if is_frozen(self.backbone):
            self.backbone.eval()
        return self

    def backbone_maps(self, images: Tensor) -> list[Tensor]:
        """The backbone's maps [(B, D_i, H_i, W_i)]; without autograd when the backbone is frozen."""
        if is_frozen(self.backbone):
            with torch.no_grad():
                return self.backbone(images).maps
        return self.backbone(images).maps

    def decode(self, maps: list[Tensor], size: tuple[int, int]) -> Tensor:
        """Head logits resized (bilinear) to `size` = (H, W): (B, K, H, W)."""
        return resize_to(self.head(maps), size)

    def forward(self, images: Tensor) -> Tensor:
        return self.decode(self.backbone_maps(images), tuple(images.shape[-2:]))

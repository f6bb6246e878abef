"""TimmBackbone's CIFAR-style stem: stride 1, no max-pool, and a stem width that is honoured."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pretrainlab.models.backbones.timm_backbone import TimmBackbone

NARROW = {"layers": [1, 1, 1, 1], "channels": [16, 32, 64, 128]}


def test_small_input_stem_keeps_full_resolution() -> None:
    backbone = TimmBackbone("resnet18", small_input_stem=True, **NARROW)
    assert backbone.strides[:2] == [1, 1]  # stem and layer1 at 32 px
    assert isinstance(backbone.model.maxpool, nn.Identity)
    assert backbone.model.conv1.out_channels == 64  # timm's default stem width


def test_stem_width_rebuilds_the_stem_and_the_first_block_inputs() -> None:
    backbone = TimmBackbone("resnet18", small_input_stem=True, stem_width=16, **NARROW)
    first_block = backbone.model.layer1[0]
    assert backbone.model.conv1.out_channels == 16
    assert backbone.model.bn1.num_features == 16
    assert first_block.conv1.in_channels == 16
    assert first_block.downsample[0].in_channels == 16
    images = torch.randn(2, 3, 32, 32)
    features = backbone(images)
    assert features.pooled.shape == (2, 128)
    features.pooled.sum().backward()
    assert all(p.grad is not None for p in backbone.parameters())
    default = TimmBackbone("resnet18", small_input_stem=True, **NARROW)
    assert sum(p.numel() for p in backbone.parameters()) < sum(p.numel() for p in default.parameters())


def test_bad_stem_width_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="stem_width=0"):
        TimmBackbone("resnet18", small_input_stem=True, stem_width=0, **NARROW)

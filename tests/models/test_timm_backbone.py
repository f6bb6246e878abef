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


TINY_VIT = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 3, "num_heads": 2}


def test_last_blocks_tokens_are_each_blocks_cls_through_the_final_norm() -> None:
    backbone = TimmBackbone("vit_tiny_patch16_224", **TINY_VIT).eval()
    block_outputs: list[torch.Tensor] = []
    for block in backbone.model.blocks:
        block.register_forward_hook(lambda _module, _inputs, output: block_outputs.append(output))
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = backbone(images)
        outputs = list(block_outputs)  # (B, 1 + N, D) after blocks 0, 1, 2 of the standard forward
        cls, patch_tokens = backbone.last_blocks_tokens(images, 2)
        expected = torch.stack([backbone.model.norm(output)[:, 0] for output in outputs[1:]], dim=1)  # (B, 2, D)
    assert cls.shape == (2, 2, 32) and patch_tokens.shape == (2, 16, 32)
    torch.testing.assert_close(cls, expected)
    torch.testing.assert_close(cls[:, -1], features.pooled)
    torch.testing.assert_close(patch_tokens, features.tokens)
    assert not torch.allclose(cls[:, 0], cls[:, 1])  # two different blocks


@pytest.mark.parametrize(
    ("arch", "options", "num_blocks", "message"),
    [
        ("resnet18", NARROW, 1, "backbone resnet18 is not a ViT"),
        ("vit_tiny_patch16_224", TINY_VIT, 4, "backbone vit_tiny_patch16_224 has 3 blocks; the last 4 were asked for"),
        ("vit_medium_patch16_gap_256", {**TINY_VIT, "depth": 1}, 1, "pools by 'avg', not by a CLS token"),
    ],
)
def test_last_blocks_tokens_refuse_what_has_no_cls_per_block(arch: str, options: dict, num_blocks: int,
                                                              message: str) -> None:  # fmt: skip
    backbone = TimmBackbone(arch, **options)
    with pytest.raises(ValueError, match=message):
        backbone.last_blocks_tokens(torch.randn(1, 3, 32, 32), num_blocks)

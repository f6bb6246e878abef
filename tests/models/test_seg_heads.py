"""Segmentation heads: output shapes and strides over a CNN (several strides) and a ViT (one map)."""

from __future__ import annotations

import pytest
import torch

from pretrainlab.config.loading import ConfigError, load_config
from pretrainlab.models.heads import (
    KNetHeadConfig,
    Mask2FormerHeadConfig,
    SegFormerHeadConfig,
    SegLinearHeadConfig,
    SegmenterHeadConfig,
    UperHeadConfig,
)
from pretrainlab.eval.segmentation_model import Segmentor
from pretrainlab.models.backbones import TimmBackbone
from pretrainlab.models.heads.seg_base import SEG_HEADS, build_seg_head

HEAD_CONFIGS = {
    "seg_linear": SegLinearHeadConfig(num_maps=2),
    "segformer": SegFormerHeadConfig(embed_dim=16),
    "segmenter": SegmenterHeadConfig(embed_dim=24, depth=1, num_heads=2),
    "uper": UperHeadConfig(channels=16),
    "mask2former": Mask2FormerHeadConfig(num_queries=4, hidden_dim=16, num_layers=3, num_heads=2, ffn_dim=32,
                                         num_encoder_layers=1, num_points=64),
    "knet": KNetHeadConfig(channels=16, num_heads=2, ffn_dim=32, updator_dim=8),
}
K = 5


@pytest.fixture(scope="module")
def cnn() -> TimmBackbone:
    return TimmBackbone("resnet18", small_input_stem=False, layers=[1, 1, 1, 1], channels=[8, 8, 16, 16]).eval()


@pytest.fixture(scope="module")
def vit() -> TimmBackbone:
    return TimmBackbone("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1, embed_dim=24, num_heads=2).eval()


def test_registry_holds_every_head_config() -> None:
    assert SEG_HEADS.names() == sorted(HEAD_CONFIGS)


@pytest.mark.parametrize("name", sorted(HEAD_CONFIGS))
def test_head_on_cnn_maps(cnn: TimmBackbone, name: str) -> None:
    assert len(set(cnn.strides)) > 1  # several strides
    head = build_seg_head(HEAD_CONFIGS[name], cnn.out_channels, cnn.strides, K)
    images = torch.randn(2, 3, 64, 64)
    logits = head(cnn(images).maps)
    stride = head.output_stride
    assert logits.shape == (2, K, 64 // stride, 64 // stride)
    expected = {"seg_linear": cnn.strides[-2], "segformer": cnn.strides[0], "segmenter": cnn.strides[-1]}
    assert stride == expected.get(name, cnn.strides[0])
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", sorted(HEAD_CONFIGS))
def test_head_on_vit_map_and_segmentor_upsamples(vit: TimmBackbone, name: str) -> None:
    config = HEAD_CONFIGS[name]
    if name == "seg_linear":
        config = SegLinearHeadConfig(num_maps=1)  # a plain ViT has one map
    head = build_seg_head(config, vit.out_channels, vit.strides, K)
    assert head.output_stride == 8
    segmentor = Segmentor(vit, head).train()
    images = torch.randn(2, 3, 32, 48)
    logits = segmentor(images)
    assert logits.shape == (2, K, 32, 48)
    logits.sum().backward()
    assert all(p.grad is not None for p in head.parameters() if p.requires_grad)


def test_linear_head_rejects_too_many_maps(vit: TimmBackbone) -> None:
    with pytest.raises(ValueError, match="num_maps must be in"):
        build_seg_head(SegLinearHeadConfig(num_maps=2), vit.out_channels, vit.strides, K)


def test_head_rejects_maps_of_another_backbone(cnn: TimmBackbone, vit: TimmBackbone) -> None:
    head = build_seg_head(UperHeadConfig(channels=8), cnn.out_channels, cnn.strides, K)
    with pytest.raises(ValueError, match="was built for maps with channels"):
        head(vit(torch.randn(1, 3, 32, 32)).maps)


def test_segmenter_masks_are_layer_normed_over_classes(vit: TimmBackbone) -> None:
    head = build_seg_head(SegmenterHeadConfig(embed_dim=24, depth=1, num_heads=2), vit.out_channels, vit.strides, K)
    logits = head(vit(torch.randn(2, 3, 32, 32)).maps)  # (B, K, h, w)
    torch.testing.assert_close(logits.mean(dim=1), torch.zeros(2, 4, 4), atol=1e-5, rtol=0)


def test_unknown_head_name_fails_at_load_with_did_you_mean() -> None:
    with pytest.raises(ConfigError, match="unknown segmentation head 'segformr'; did you mean 'segformer'"):
        load_config(None, ["eval.seg.head.name=segformr"])
    with pytest.raises(KeyError, match="did you mean 'uper'"):
        SEG_HEADS.get("upper")


@pytest.mark.parametrize("name", ["seg_linear", "segmenter", "uper", "knet"])
def test_heads_with_a_configured_width_ignore_decoder_width(cnn: TimmBackbone, name: str) -> None:
    def num_params(decoder_width: int | None) -> int:
        head = build_seg_head(HEAD_CONFIGS[name], cnn.out_channels, cnn.strides, K, decoder_width=decoder_width)
        return sum(p.numel() for p in head.parameters())

    assert num_params(768) == num_params(None)

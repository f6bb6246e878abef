"""Mask2Former head: shapes over several backbones' maps, both pixel decoders, gradients from the loss
to every parameter, semantic inference, the config and its registration, the finetuning step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pretrainlab.config.loading import ConfigError, load_config
from pretrainlab.engine.schedules import StepValues
from pretrainlab.eval.segmentation_model import Segmentor
from pretrainlab.methods.segmentation import SegFinetune
from pretrainlab.models.backbones import TimmBackbone
from pretrainlab.models.heads import Mask2FormerHead, Mask2FormerHeadConfig, SegLinearHeadConfig
from pretrainlab.models.heads.seg_base import SEG_HEADS, build_seg_head
from pretrainlab.models.layers.ms_deform_attn import MSDeformAttn

K = 5
CNN_MAPS = ([8, 16, 16, 32], [4, 8, 16, 32], [16, 8, 4, 2])  # channels, strides, sizes of a 64-px input
VIT_MAPS = ([24], [8], [8])


def small_config(**overrides: object) -> Mask2FormerHeadConfig:
    settings = dict(num_queries=6, hidden_dim=16, num_layers=3, num_heads=2, ffn_dim=32, num_encoder_layers=1,
                    num_points=64)  # fmt: skip
    return Mask2FormerHeadConfig(**{**settings, **overrides})


def random_maps(channels: list[int], sizes: list[int], batch: int = 2) -> list[torch.Tensor]:
    return [torch.randn(batch, c, s, s) for c, s in zip(channels, sizes)]


def labels(batch: int = 2, size: int = 64) -> torch.Tensor:
    label = torch.randint(0, K, (batch, size // 8, size // 8)).repeat_interleave(8, 1).repeat_interleave(8, 2)
    label[0, :8] = 255
    return label


@pytest.mark.parametrize("pixel_decoder", ["msdeform", "fpn"])
@pytest.mark.parametrize("maps", [CNN_MAPS, VIT_MAPS], ids=["cnn", "vit"])
def test_forward_gives_semantic_scores_at_the_finest_stride(pixel_decoder: str, maps: tuple) -> None:
    torch.manual_seed(0)
    channels, strides, sizes = maps
    head = build_seg_head(small_config(pixel_decoder=pixel_decoder), channels, strides, K)
    assert isinstance(head, Mask2FormerHead) and head.output_stride == strides[0]
    scores = head(random_maps(channels, sizes))
    assert scores.shape == (2, K, sizes[0], sizes[0])
    assert torch.isfinite(scores).all() and (scores >= 0).all() and (scores <= 6).all()  # ≤ num_queries


@pytest.mark.parametrize("pixel_decoder", ["msdeform", "fpn"])
@pytest.mark.parametrize("maps", [CNN_MAPS, VIT_MAPS], ids=["cnn", "vit"])
def test_every_parameter_gets_a_gradient_from_the_loss(pixel_decoder: str, maps: tuple) -> None:
    torch.manual_seed(0)
    channels, strides, sizes = maps
    head = build_seg_head(small_config(pixel_decoder=pixel_decoder), channels, strides, K)
    for module in head.modules():  # Deformable DETR zero-initialises these weights, which blocks the
        if isinstance(module, MSDeformAttn):  # gradient to the position / level embeddings at step 0 only
            nn.init.normal_(module.sampling_offsets.weight, std=0.01)
            nn.init.normal_(module.attention_weights.weight, std=0.01)
    losses = head.loss(random_maps(channels, sizes), labels(), avg_non_ignore=False)
    assert {"loss_cls", "loss_mask", "loss_dice"} <= set(losses)
    sum(v for k, v in losses.items() if k.startswith("loss")).backward()
    no_grad = [n for n, p in head.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []
    assert all(torch.isfinite(p.grad).all() for p in head.parameters())


def test_every_decoder_layer_is_supervised() -> None:
    torch.manual_seed(0)
    channels, strides, sizes = CNN_MAPS
    head = build_seg_head(small_config(num_layers=4), channels, strides, K)
    class_logits, mask_logits = head.predictions(random_maps(channels, sizes))
    assert len(class_logits) == len(mask_logits) == 5  # before the first layer + after each of 4
    assert class_logits[0].shape == (2, 6, K + 1) and mask_logits[0].shape == (2, 6, 16, 16)


def test_semantic_scores_are_class_probabilities_times_mask_probabilities() -> None:
    class_logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]]])  # (B=1, Q=2, C+1=3)
    mask_logits = torch.tensor([[[[0.0, 4.0]], [[-1.0, 1.0]]]])  # (1, 2, 1, 2)
    scores = Mask2FormerHead.semantic_scores(class_logits, mask_logits)
    probs, masks = class_logits.softmax(-1)[0, :, :2], mask_logits.sigmoid()[0, :, 0]  # (Q, C), (Q, 2)
    expected = torch.stack([(probs[:, c, None] * masks).sum(0) for c in range(2)])[None, :, None]  # (1, C, 1, 2)
    torch.testing.assert_close(scores, expected)


def test_config_loads_by_name_and_round_trips() -> None:
    config = load_config(None, ["eval.seg.head.name=mask2former", "eval.seg.head.pixel_decoder=fpn",
                                "eval.seg.head.num_points=null"])  # fmt: skip
    head = config.eval.seg.head
    assert isinstance(head, Mask2FormerHeadConfig)
    assert (head.pixel_decoder, head.num_points, head.num_queries, head.class_weight) == ("fpn", None, 100, 2.0)
    assert Mask2FormerHeadConfig.model_validate(head.model_dump(mode="json")) == head
    assert SEG_HEADS.get("mask2former").config is Mask2FormerHeadConfig


def test_config_rejects_unknown_values_and_keys() -> None:
    with pytest.raises(ConfigError, match="pixel_decoder"):
        load_config(None, ["eval.seg.head.name=mask2former", "eval.seg.head.pixel_decoder=deform"])
    with pytest.raises(ConfigError, match="num_querys"):
        load_config(None, ["eval.seg.head.name=mask2former", "eval.seg.head.num_querys=10"])
    with pytest.raises(KeyError, match="did you mean 'mask2former'"):
        SEG_HEADS.get("mask2formr")
    with pytest.raises(ValueError, match="divisible by num_heads"):
        build_seg_head(small_config(hidden_dim=24, num_heads=5), *CNN_MAPS[:2], K)


def test_loss_weights_and_points_reach_the_criterion() -> None:
    config = small_config(class_weight=1.0, mask_weight=3.0, dice_weight=4.0, no_object_weight=0.2, num_points=None)
    head = build_seg_head(config, *CNN_MAPS[:2], K)
    weights = head.criterion.weights
    assert (weights.class_weight, weights.mask_weight, weights.dice_weight, weights.no_object_weight) == (1, 3, 4, 0.2)
    assert head.criterion.num_points is None
    assert head.criterion.class_weight[-1].item() == pytest.approx(0.2)


def test_finetuning_step_trains_mask2former_by_its_own_loss_and_other_heads_by_cross_entropy() -> None:
    torch.manual_seed(0)
    backbone = TimmBackbone("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1, embed_dim=24, num_heads=2)
    step = StepValues(iteration=0, epoch=0, lr=1e-3, weight_decay=0.0)
    images, label = torch.randn(2, 3, 32, 32), labels(size=32)
    for config, keys in [(small_config(), {"loss_cls", "loss_mask", "loss_dice"}), (SegLinearHeadConfig(), {"loss"})]:
        segmentor = Segmentor(backbone, build_seg_head(config, backbone.out_channels, backbone.strides, K)).train()
        method = SegFinetune(segmentor, avg_non_ignore=False, uses_cached_maps=False)
        outputs = method.training_step((images, label), step)
        assert keys <= {k for k in outputs if k.startswith("loss")} and all(torch.isfinite(v) for v in outputs.values())
        assert segmentor(images).shape == (2, K, 32, 32)

"""What trains: one function decides; frozen modules run in eval mode without gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pretrainlab.engine.freeze import (
    is_frozen,
    matches,
    set_trainable,
    set_trainable_for_mode,
)
from pretrainlab.eval.segmentation_model import Segmentor
from pretrainlab.models.backbones import TimmBackbone
from pretrainlab.models.heads.seg_linear import SegLinearHead


def toy() -> nn.Module:
    model = nn.Module()
    model.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    model.head = nn.Sequential(nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))
    return model


def trainable_names(model: nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_patterns_are_prefixes_or_globs() -> None:
    assert matches("head.1.weight", "head")
    assert not matches("header.weight", "head")
    assert matches("backbone.1.bias", "*.bias")
    assert matches("backbone.0.weight", "backbone.0")


def test_modes_and_freeze_patterns() -> None:
    model = toy()
    split = set_trainable_for_mode(model, "frozen")
    assert trainable_names(model) == {"head.0.weight", "head.0.bias", "head.1.weight", "head.1.bias"}
    assert set(split.trainable) | set(split.frozen) == {name for name, _ in model.named_parameters()}
    assert not set(split.trainable) & set(split.frozen)
    set_trainable_for_mode(model, "full", freeze=["backbone.1", "*.bias"])
    assert trainable_names(model) == {"backbone.0.weight", "head.0.weight", "head.1.weight"}


def test_pattern_matching_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="freeze pattern 'backbone.7' matches no parameter"):
        set_trainable(toy(), "all", freeze=["backbone.7"])
    with pytest.raises(ValueError, match="did you mean 'head'"):
        set_trainable(toy(), ["haed"])
    with pytest.raises(ValueError, match="nothing trains"):
        set_trainable(toy(), ["head"], freeze=["head"])


def test_frozen_backbone_stays_in_eval_mode_without_grad() -> None:
    backbone = TimmBackbone("resnet18", layers=[1, 1, 1, 1], channels=[8, 8, 8, 8])
    segmentor = Segmentor(backbone, SegLinearHead(backbone.out_channels, backbone.strides, 3))
    set_trainable_for_mode(segmentor, "frozen")
    assert is_frozen(segmentor.backbone) and not is_frozen(segmentor.head)
    segmentor.train()
    assert not segmentor.backbone.training and segmentor.head.training
    maps = segmentor.backbone_maps(torch.randn(2, 3, 32, 32))
    assert not any(m.requires_grad for m in maps)
    set_trainable_for_mode(segmentor, "full")
    segmentor.train()
    assert segmentor.backbone.training
    assert segmentor.backbone_maps(torch.randn(2, 3, 32, 32))[-1].requires_grad

"""Losses on taps: keys, weights, per-crop KoLeo, cross-entropy against repeated labels."""

from __future__ import annotations

import math

import pytest
import torch

from pretrainlab.methods.tap_losses import CrossEntropyLossConfig, KoLeoLossConfig
from pretrainlab.losses.cross_entropy import classification_cross_entropy
from pretrainlab.losses.koleo import koleo_loss
from pretrainlab.methods.tap_losses import build_tap_loss, tap_losses


def test_weighted_loss_and_unweighted_log() -> None:
    features = torch.randn(8, 5)
    losses = [build_tap_loss(KoLeoLossConfig(tap="neck", weight=0.25))]
    outputs = tap_losses(losses, {"neck": features}, num_crops=1)
    assert set(outputs) == {"loss_koleo_neck", "koleo_neck"}
    torch.testing.assert_close(outputs["koleo_neck"], koleo_loss(features))
    torch.testing.assert_close(outputs["loss_koleo_neck"], 0.25 * koleo_loss(features))
    assert not outputs["koleo_neck"].requires_grad


def test_koleo_is_per_crop_block() -> None:
    """Two crops of the same 2 images: per crop the neighbours are the other image (±e1 -> -log 2), never a twin."""
    crop = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])  # (B=2, D)
    features = torch.cat([crop, crop])  # (G*B, D): crop 1 repeats crop 0
    outputs = tap_losses([build_tap_loss(KoLeoLossConfig())], {"backbone": features}, num_crops=2)
    assert float(outputs["koleo_backbone"]) == pytest.approx(-math.log(2.0), abs=1e-6)
    pooled_over_crops = tap_losses([build_tap_loss(KoLeoLossConfig())], {"backbone": features}, num_crops=1)
    assert float(pooled_over_crops["koleo_backbone"]) > 10  # twins at distance ~0 when crops are mixed


def test_head_tap_key_and_cross_entropy_against_repeated_labels() -> None:
    logits = torch.randn(6, 4)  # 2 crops of B = 3
    labels = torch.tensor([0, 3, 1])
    config = CrossEntropyLossConfig(tap="head:cls", weight=2.0, label_smoothing=0.1)
    outputs = tap_losses([build_tap_loss(config)], {"head:cls": logits}, num_crops=2, labels=labels)
    expected = classification_cross_entropy(logits, torch.tensor([0, 3, 1, 0, 3, 1]), 0.1)
    torch.testing.assert_close(outputs["cross_entropy_head_cls"], expected)
    torch.testing.assert_close(outputs["loss_cross_entropy_head_cls"], 2.0 * expected)


def test_missing_tap_and_missing_labels_raise() -> None:
    with pytest.raises(KeyError, match="attached to tap 'neck'; the model has backbone"):
        tap_losses([build_tap_loss(KoLeoLossConfig(tap="neck"))], {"backbone": torch.randn(4, 2)}, num_crops=1)
    with pytest.raises(ValueError, match="needs labels"):
        loss = build_tap_loss(CrossEntropyLossConfig(tap="head:x"))
        tap_losses([loss], {"head:x": torch.randn(4, 2)}, num_crops=1)

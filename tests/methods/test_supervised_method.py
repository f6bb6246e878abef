"""Supervised pretraining: cross-entropy with label smoothing on the head, multi-task weights, tap losses, learning."""

from __future__ import annotations

import pytest
import torch

from pretrainlab.config import load_config
from pretrainlab.engine.schedules import StepValues
from pretrainlab.losses.cross_entropy import classification_cross_entropy
from pretrainlab.methods import Supervised, build_method
from pretrainlab.models.backbones.timm_backbone import TimmBackbone
from pretrainlab.models.heads import ClsHead, LinearHead, MultiTaskHead

STEP = StepValues(0, 0, 1e-3, 0.0)
NUM_CLASSES = 3


def tiny_backbone() -> TimmBackbone:
    return TimmBackbone("resnet18", small_input_stem=True, layers=[1, 1, 1, 1], channels=[8, 8, 16, 16])


def test_loss_is_label_smoothed_cross_entropy_of_the_head() -> None:
    backbone = tiny_backbone()
    method = Supervised(backbone, LinearHead(backbone.embed_dim, NUM_CLASSES), head_name="linear", label_smoothing=0.2)
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 1])
    outputs = method.training_step(([images], labels), STEP)
    with torch.no_grad():
        logits = method.model(images)["head:linear"]
    torch.testing.assert_close(outputs["loss"], classification_cross_entropy(logits, labels, 0.2))
    assert 0.0 <= float(outputs["accuracy"]) <= 1.0
    assert method.eval_backbone() is backbone


def test_multi_task_losses_are_summed_with_weights() -> None:
    backbone = tiny_backbone()
    head = MultiTaskHead(
        {"a": LinearHead(backbone.embed_dim, NUM_CLASSES), "b": ClsHead(backbone.embed_dim, NUM_CLASSES, hidden_dim=8)},
        {"a": 0.25},
    )
    method = Supervised(backbone, head, head_name="multi_task", label_smoothing=0.0)
    outputs = method.training_step(([torch.randn(4, 3, 32, 32)], torch.tensor([0, 1, 2, 1])), STEP)
    expected = 0.25 * outputs["cross_entropy_a"] + outputs["cross_entropy_b"]
    torch.testing.assert_close(outputs["loss"].detach(), expected)


def test_needs_labels_and_one_view() -> None:
    backbone = tiny_backbone()
    method = Supervised(backbone, LinearHead(backbone.embed_dim, NUM_CLASSES))
    with pytest.raises(ValueError, match="needs one view per image"):
        method.training_step(([torch.randn(2, 3, 32, 32)] * 2, torch.tensor([0, 1])), STEP)


def test_built_from_config_with_neck_restore_and_tap_losses() -> None:
    config = load_config(
        None,
        [
            "backbone={name: sebnet}",
            "neck={name: pappm, branch_channels: 8, restore_stride: 8}",
            "method={name: supervised, head: {name: cls, hidden_dim: 16}, losses: [{name: koleo, tap: neck}]}",
            "data.synthetic.num_classes=5",
        ],
    )
    method = build_method(config)
    assert isinstance(method, Supervised)
    assert method.model.tap_names() == ["backbone", "neck", "head:cls"]
    outputs = method.training_step(([torch.randn(4, 3, 32, 32)], torch.tensor([0, 4, 2, 1])), STEP)
    assert {"loss", "accuracy", "loss_koleo_neck", "koleo_neck"} <= set(outputs)
    assert method.model.heads["cls"].classifier.out_features == 5


def test_a_few_steps_fit_a_fixed_batch() -> None:
    torch.manual_seed(0)
    backbone = tiny_backbone()
    method = Supervised(backbone, LinearHead(backbone.embed_dim, NUM_CLASSES), label_smoothing=0.1)
    optimizer = torch.optim.AdamW(method.parameters(), lr=1e-2)
    images, labels = torch.randn(12, 3, 32, 32), torch.arange(12) % NUM_CLASSES
    losses = []
    for _ in range(15):
        loss = method.training_step(([images], labels), STEP)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses

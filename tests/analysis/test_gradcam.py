"""Grad-CAM: a hand-computed map, a classifier that only sees one quadrant, the ViT target layer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pretrainlab.analysis.gradcam import (
    CamForward,
    choose_targets,
    classifier_cam_forward,
    grad_cam,
)
from pretrainlab.analysis.probed_model import BackboneClassifier
from pretrainlab.eval.linear_probe import ProbeHead
from pretrainlab.models.backbones.base import Backbone, Features, global_average
from pretrainlab.models.backbones.timm_backbone import TimmBackbone


class QuadrantBackbone(Backbone):
    """Channel 0 of its (B, 2, 8, 8) map sees only the top-left quadrant of a 32-px image, channel 1 only
    the bottom-right one; pooled = the global average of the map."""

    def __init__(self) -> None:
        super().__init__()
        self.embed_dim, self.out_channels, self.strides, self.patch_size, self.in_chans = 2, [2], [4], None, 3
        self.conv = nn.Conv2d(3, 2, 1, bias=False)
        nn.init.uniform_(self.conv.weight, 0.5, 1.0)
        quadrants = torch.zeros(2, 8, 8)
        quadrants[0, :4, :4] = 1.0
        quadrants[1, 4:, 4:] = 1.0
        self.register_buffer("quadrants", quadrants)

    def forward(self, images: Tensor) -> Features:  # images (B, 3, 32, 32), positive
        feature_map = F.avg_pool2d(F.relu(self.conv(images)), 4) * self.quadrants  # (B, 2, 8, 8)
        return Features(pooled=global_average(feature_map), maps=[feature_map])


def identity_probe(width: int) -> ProbeHead:
    return ProbeHead(torch.zeros(width), torch.ones(width), torch.eye(width), torch.zeros(width))


def test_grad_cam_is_relu_of_the_gradient_mean_weighted_sum() -> None:
    first = torch.tensor([[[4.0, 0.0], [2.0, 1.0]], [[0.0, 4.0], [1.0, 1.0]]])  # (C=2, 2, 2)
    activations = torch.stack([first, 2 * first]).requires_grad_(True)  # (B=2, 2, 2, 2)
    weight = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # class 0 = sum(weight * A_0) - A_1[0, 1]
    class_0 = (weight * activations[:, 0]).sum(dim=(1, 2)) - activations[:, 1, 0, 1]
    logits = torch.stack([class_0, torch.zeros(2)], dim=1)  # (B, 2)
    cams = grad_cam(CamForward(logits, activations, lambda a: a), torch.tensor([0, 0]), (2, 2))
    # alpha = (mean(weight), -1 at one of 4 cells) = (0.5, -0.25); ReLU(0.5 A_0 - 0.25 A_1) = [[2, 0], [0.75, 0.25]]
    expected = torch.tensor([[1.0, 0.0], [0.375, 0.125]])
    torch.testing.assert_close(cams, torch.stack([expected, expected]))  # normalised per image: the 2x image agrees


def test_grad_cam_of_a_class_without_positive_evidence_is_zero() -> None:
    activations = torch.rand(1, 3, 4, 4).requires_grad_(True)
    logits = torch.stack([-activations.sum(), activations.sum()])[None]  # (1, 2): class 0 only loses with A
    cams = grad_cam(CamForward(logits, activations, lambda a: a), torch.tensor([0]), (8, 8))
    assert cams.shape == (1, 8, 8) and cams.abs().max() == 0


def test_cam_mass_lies_in_the_quadrant_the_class_looks_at() -> None:
    classifier = BackboneClassifier(QuadrantBackbone(), identity_probe(2)).eval()
    images = torch.rand(2, 3, 32, 32)
    forward = classifier_cam_forward(classifier, images)
    torch.testing.assert_close(forward.logits, classifier(images))
    cams = grad_cam(forward, torch.tensor([0, 1]), (32, 32))  # image 0 explains class 0, image 1 class 1
    assert cams.shape == (2, 32, 32) and cams.min() >= 0 and cams.amax(dim=(1, 2)).tolist() == [1.0, 1.0]
    # bilinear upsampling (x4) spreads a cell over 2 px beyond its quadrant, no further
    assert cams[0, 18:].abs().max() == 0 and cams[0, :, 18:].abs().max() == 0
    assert cams[1, :14].abs().max() == 0 and cams[1, :, :14].abs().max() == 0
    assert cams[0, :16, :16].sum() / cams[0].sum() > 0.85
    assert cams[1, 16:, 16:].sum() / cams[1].sum() > 0.85


def test_cam_target_predicted_follows_the_brighter_quadrant() -> None:
    classifier = BackboneClassifier(QuadrantBackbone(), identity_probe(2)).eval()
    images = torch.full((1, 3, 32, 32), 0.1)
    images[:, :, 16:, 16:] = 1.0  # class 1's quadrant is brighter: the probe predicts 1
    forward = classifier_cam_forward(classifier, images)
    predicted = choose_targets(forward.logits, torch.tensor([0]), "predicted")
    assert predicted.tolist() == [1]
    cams = grad_cam(forward, predicted, (32, 32))
    assert cams[0, :14].abs().max() == 0 and cams[0, 16:, 16:].sum() / cams[0].sum() > 0.85


def test_choose_targets() -> None:
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]])
    assert choose_targets(logits, torch.tensor([2, 2]), "predicted").tolist() == [1, 0]
    assert choose_targets(logits, torch.tensor([2, 1]), "label").tolist() == [2, 1]
    with pytest.raises(ValueError, match="'predicted' or 'label'"):
        choose_targets(logits, torch.tensor([2, 1]), "random")  # type: ignore[arg-type]


def test_vit_target_layer_is_the_last_blocks_normalised_input_on_the_patch_grid() -> None:
    backbone = TimmBackbone("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3)
    classifier = BackboneClassifier(backbone, ProbeHead(torch.zeros(48), torch.ones(48), torch.randn(48, 4),
                                                        torch.zeros(4))).eval()  # fmt: skip
    images = torch.randn(2, 3, 32, 24)
    forward = classifier_cam_forward(classifier, images)
    torch.testing.assert_close(forward.logits, classifier(images))
    block = backbone.model.blocks[-1]
    with torch.no_grad():
        vit = backbone.model
        normalised = block.norm1(vit.blocks[0](vit._pos_embed(vit.patch_embed(images))))  # depth 2: block 0's output
    torch.testing.assert_close(forward.activations.detach(), normalised)  # (B, 1 + 4 * 3, 48)
    assert forward.to_grid(forward.activations).shape == (2, 48, 4, 3)
    cams = grad_cam(forward, torch.tensor([0, 3]), (32, 24))
    assert cams.shape == (2, 32, 24)
    assert cams.amax(dim=(1, 2)).tolist() == [1.0, 1.0]  # a non-zero gradient reaches the target layer


def test_grad_cam_checks_targets_and_the_graph() -> None:
    activations = torch.rand(2, 3, 4, 4).requires_grad_(True)
    logits = activations.mean(dim=(2, 3))  # (2, 3)
    with pytest.raises(ValueError, match="one target per image"):
        grad_cam(CamForward(logits, activations, lambda a: a), torch.tensor([0]), (4, 4))
    detached = torch.rand(2, 3, 4, 4).requires_grad_(True)
    with pytest.raises(ValueError, match="do not depend on the target layer"):
        grad_cam(CamForward(logits, detached, lambda a: a), torch.tensor([0, 1]), (4, 4))

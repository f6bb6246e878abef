"""DACS (methods/dacs.py, methods/dacs_mix.py): EMA warm start, ClassMix, pseudo weights, strong
augmentation, feature distance, the target_only / gt_mix variants and one step of a tiny segmentor."""

from __future__ import annotations

import copy
import math

import cv2
import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from pretrainlab.engine.schedules import StepValues
from pretrainlab.eval.segmentation_model import Segmentor
from pretrainlab.methods.dacs import (
    DACS,
    DACSSettings,
    build_dacs,
    ema_momentum,
    ema_update_parameters_,
    feature_distance,
    pseudo_label_weight,
    scaled_rows,
    thing_cell_mask,
)
from pretrainlab.methods.dacs_mix import (
    adjust_hue,
    adjust_saturation,
    blur_kernel_size,
    classmix_masks,
    gaussian_blur,
    hsv_to_rgb,
    mix,
    rgb_to_hsv,
    strong_transform,
)
from pretrainlab.models.backbones.timm_backbone import TimmBackbone
from pretrainlab.models.heads.seg_base import build_seg_head
from pretrainlab.models.heads.seg_linear import SegLinearHeadConfig

NUM_CLASSES = 19
MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)


def step_at(iteration: int) -> StepValues:
    return StepValues(iteration, 0, 1e-3, 0.0)


def tiny_segmentor(dropout: float = 0.0) -> Segmentor:
    backbone = TimmBackbone("resnet18", layers=[1, 1, 1, 1], channels=[8, 8, 16, 16])
    head = build_seg_head(SegLinearHeadConfig(dropout=dropout), backbone.out_channels, backbone.strides, NUM_CLASSES)
    return Segmentor(backbone, head)


def tiny_batch(seed: int = 0, size: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    source_labels = torch.randint(0, 4, (2, size // 16, size // 16), generator=g)
    source_labels = source_labels.repeat_interleave(16, 1).repeat_interleave(16, 2)  # blocks of 4 classes
    target_labels = torch.randint(0, NUM_CLASSES, (2, size, size), generator=g)
    return (
        torch.randn(2, 3, size, size, generator=g),
        source_labels,
        torch.randn(2, 3, size, size, generator=g),
        target_labels,
    )


# --- EMA -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("iteration", "expected"), [(0, 0.0), (1, 0.5), (9, 0.9), (99, 0.99), (10**6, 0.999)])
def test_ema_momentum_warm_start(iteration: int, expected: float) -> None:
    assert ema_momentum(iteration, 0.999) == pytest.approx(expected)


def test_ema_update_moves_parameters_not_buffers() -> None:
    torch.manual_seed(0)
    teacher, student = (
        nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)),
        nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)),
    )
    student[1].running_mean.fill_(3.0)
    before = copy.deepcopy(teacher)
    ema_update_parameters_(teacher, student, 0.9)
    for t, b, s in zip(teacher.parameters(), before.parameters(), student.parameters()):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * s)
    for t, b in zip(teacher.buffers(), before.buffers()):
        torch.testing.assert_close(t, b)


# --- ClassMix ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_classes", [1, 2, 3, 5])
def test_classmix_pastes_half_the_present_classes_rounded_up(num_classes: int) -> None:
    classes = torch.tensor([3, 7, 11, 0, 18][:num_classes])
    label = classes[torch.arange(40) % num_classes].view(5, 8)  # (5, 8): every class present
    label[0, :3] = 255
    labels = torch.stack([label, label.flip(1)])  # (2, 5, 8)
    for seed in range(6):
        masks = classmix_masks(labels, torch.Generator().manual_seed(seed))
        assert masks.shape == (2, 1, 5, 8) and masks.dtype == torch.bool
        for mask, lab in zip(masks[:, 0], labels):
            pasted = torch.unique(lab[mask])
            assert pasted.numel() == math.ceil(num_classes / 2)
            assert 255 not in pasted.tolist()
            torch.testing.assert_close(mask, torch.isin(lab, pasted))  # whole classes, nothing else


def test_classmix_of_an_all_ignored_label_pastes_nothing_and_is_seeded() -> None:
    labels = torch.full((1, 4, 4), 255)
    assert not classmix_masks(labels, torch.Generator().manual_seed(0)).any()
    labels = torch.randint(0, 6, (3, 8, 8), generator=torch.Generator().manual_seed(1))
    first = classmix_masks(labels, torch.Generator().manual_seed(5))
    torch.testing.assert_close(first, classmix_masks(labels, torch.Generator().manual_seed(5)))


def test_mix_takes_source_inside_the_mask() -> None:
    mask = torch.tensor([[True, False], [False, True]]).view(1, 1, 2, 2)
    source, target = torch.full((1, 3, 2, 2), 1.0), torch.full((1, 3, 2, 2), 2.0)
    torch.testing.assert_close(mix(mask, source, target)[0, 1], torch.tensor([[1.0, 2.0], [2.0, 1.0]]))
    labels = mix(mask, torch.full((1, 2, 2), 4), torch.full((1, 2, 2), 9))
    assert labels.tolist() == [[[4, 9], [9, 4]]]


# --- pseudo labels ----------------------------------------------------------------------------------


def test_pseudo_weight_is_the_batch_confident_fraction_with_border_rows_zero() -> None:
    probs = torch.full((2, 3, 6, 4), 0.0)
    probs[:, 1] = 0.5
    probs[:, 2] = 0.5  # ties: argmax is the first, class 1
    confident = torch.zeros(2, 6, 4, dtype=torch.bool)
    confident[0, 0, :] = True  # 4 pixels in a top border row (they count in the fraction)
    confident[0, 3, :2] = True
    confident[1, 2, 1] = True  # 7 of 48 pixels
    probs[:, 0][confident] = 0.98
    probs[:, 1][confident] = 0.01
    probs[:, 2][confident] = 0.01
    labels, weights = pseudo_label_weight(probs, 0.968, ignore_top=1, ignore_bottom=2)
    assert labels.dtype == torch.int64 and labels.shape == (2, 6, 4)
    torch.testing.assert_close(labels, torch.where(confident, 0, 1))
    expected = torch.full((2, 6, 4), 7 / 48)
    expected[:, :1] = 0.0
    expected[:, 4:] = 0.0
    torch.testing.assert_close(weights, expected)


def test_pseudo_weight_threshold_is_inclusive_and_rows_scale_with_height() -> None:
    probs = torch.tensor([0.968, 0.032]).view(1, 2, 1, 1).expand(1, 2, 2, 2)
    _, weights = pseudo_label_weight(probs, 0.968, 0, 0)
    torch.testing.assert_close(weights, torch.ones(1, 2, 2))
    assert (scaled_rows(15, 512, 512), scaled_rows(120, 512, 512)) == (15, 120)
    assert (scaled_rows(15, 64, 512), scaled_rows(120, 64, 512)) == (2, 15)
    with pytest.raises(ValueError, match="do not fit"):
        pseudo_label_weight(probs, 0.968, 1, 2)


# --- strong augmentation ----------------------------------------------------------------------------


def test_hsv_matches_opencv_and_round_trips() -> None:
    rgb = torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(0))
    rgb[:, 0, 0] = 0.5  # grey: hue and saturation 0
    hsv = rgb_to_hsv(rgb)
    reference = cv2.cvtColor(rgb.permute(1, 2, 0).numpy(), cv2.COLOR_RGB2HSV)  # H in degrees
    np.testing.assert_allclose(hsv[0].numpy(), reference[..., 0] / 360.0, atol=1e-5)
    np.testing.assert_allclose(hsv[1:].permute(1, 2, 0).numpy(), reference[..., 1:], atol=1e-5)
    torch.testing.assert_close(hsv_to_rgb(hsv), rgb)


def test_hue_and_saturation_by_hand() -> None:
    red = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    torch.testing.assert_close(adjust_hue(red, 0.5), torch.tensor([0.0, 1.0, 1.0]).view(3, 1, 1))  # cyan
    torch.testing.assert_close(adjust_hue(red, -1 / 3), torch.tensor([0.0, 0.0, 1.0]).view(3, 1, 1))  # blue
    orange = torch.tensor([0.8, 0.4, 0.2]).view(3, 1, 1)
    torch.testing.assert_close(adjust_saturation(orange, 0.0), torch.full((3, 1, 1), 0.8))


def test_blur_kernel_size_as_daformer_and_blur_matches_opencv() -> None:
    assert [blur_kernel_size(n) for n in (512, 1024, 64, 40, 10)] == [51, 103, 7, 3, 1]
    images = torch.rand(2, 3, 40, 64, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.3, 1.1], dtype=torch.float64)
    blurred = gaussian_blur(images, sigma)
    for i in range(2):
        reference = cv2.GaussianBlur(images[i].permute(1, 2, 0).numpy(), (7, 3), sigmaX=float(sigma[i]),
                                     sigmaY=float(sigma[i]), borderType=cv2.BORDER_REFLECT_101)  # fmt: skip
        np.testing.assert_allclose(blurred[i].permute(1, 2, 0).numpy(), reference, atol=1e-5)


def test_strong_transform_is_seeded_and_off_when_probabilities_are_zero() -> None:
    pixels = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 255
    images = (pixels - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    off = strong_transform(
        images, MEAN, STD, torch.Generator().manual_seed(0), jitter_probability=0.0, blur_probability=0.0
    )
    torch.testing.assert_close(off, images, atol=1e-4, rtol=0)
    on = [strong_transform(images, MEAN, STD, torch.Generator().manual_seed(3), jitter_probability=1.0, blur_probability=1.0)
          for _ in range(2)]  # fmt: skip
    torch.testing.assert_close(on[0], on[1])
    assert not torch.allclose(on[0], images, atol=1e-2)
    unnormalised = on[0] * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)
    assert unnormalised.min() >= -1e-3 and unnormalised.max() <= 255 + 1e-3


# --- feature distance -------------------------------------------------------------------------------


def test_thing_cell_mask_needs_a_dominant_thing_class() -> None:
    labels = torch.zeros(1, 8, 8, dtype=torch.int64)  # 2 x 2 cells of 4 x 4
    labels[0, :4, :4] = 11  # all thing
    labels[0, :4, 4:] = 13
    labels[0, :1, 4:] = 0  # 75 % thing: counts
    labels[0, 4:, :4] = 255
    labels[0, 4:, :2] = 12  # 50 % thing, 50 % ignored: no
    labels[0, 4:, 4:] = 2  # stuff: no
    mask = thing_cell_mask(labels, (2, 2), [11, 12, 13], 0.75, NUM_CLASSES)
    assert mask.tolist() == [[[True, True], [False, False]]]


def test_feature_distance_by_hand_and_empty_mask_is_zero() -> None:
    features = torch.zeros(1, 2, 1, 2, requires_grad=True)
    reference = torch.tensor([[3.0, 0.0], [4.0, 1.0]]).view(1, 2, 1, 2)  # distances 5 and 1
    assert feature_distance(features, reference).item() == pytest.approx(3.0)
    assert feature_distance(features, reference, torch.tensor([[[True, False]]])).item() == pytest.approx(5.0)
    empty = feature_distance(features, reference, torch.zeros(1, 1, 2, dtype=torch.bool))
    empty.backward()
    assert empty.item() == 0.0 and features.grad is not None


# --- the method -------------------------------------------------------------------------------------


def test_one_step_runs_and_the_teacher_moves_by_the_warm_start_rule() -> None:
    method = DACS(tiny_segmentor(), DACSSettings(use_feature_distance=True, use_target_feature_distance=True), seed=0)
    method.train()
    outputs = method.training_step(tiny_batch(), step_at(0))
    assert {"loss_source", "loss_mix", "loss_fd_source", "loss_fd_target", "pseudo_weight", "target_accuracy"} <= set(
        outputs
    )
    loss = sum(v for k, v in outputs.items() if k.startswith("loss"))
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is None for p in method.teacher.parameters())
    start = copy.deepcopy(method.teacher)
    with torch.no_grad():
        for p in method.student.parameters():
            p.add_(0.1)  # an optimizer step
    method.after_optimizer_step(step_at(0))  # one step taken: α(1) = 0.5
    for t, s0, s in zip(method.teacher.parameters(), start.parameters(), method.student.parameters()):
        torch.testing.assert_close(t, 0.5 * s0 + 0.5 * s)
    previous = copy.deepcopy(method.teacher)
    method.after_optimizer_step(step_at(8))  # nine steps taken: α(9) = 0.9
    for t, p, s in zip(method.teacher.parameters(), previous.parameters(), method.student.parameters()):
        torch.testing.assert_close(t, 0.9 * p + 0.1 * s)
    for t, p in zip(method.teacher.buffers(), previous.buffers()):
        torch.testing.assert_close(t, p)
    assert method.segmentor() is method.student and method.eval_backbone() is method.student.backbone


def test_teacher_batchnorm_trains_dropout_off_reference_eval() -> None:
    method = DACS(tiny_segmentor(dropout=0.5), DACSSettings(use_feature_distance=True), seed=0)
    method.train()
    assert method.teacher.head.bn.training and method.teacher.backbone.training
    assert not method.teacher.head.dropout.training and method.student.head.dropout.training
    assert not method.reference_backbone.training
    assert not any(p.requires_grad for p in [*method.teacher.parameters(), *method.reference_backbone.parameters()])


def test_iteration_zero_restarts_the_teacher_from_the_student() -> None:
    method = DACS(tiny_segmentor(), seed=0)
    method.train()
    with torch.no_grad():
        method.student.head.classifier.bias.fill_(1.0)  # weights loaded after construction
    method.training_step(tiny_batch(), step_at(0))
    torch.testing.assert_close(method.teacher.head.classifier.bias, torch.ones(NUM_CLASSES))


def test_step_randomness_depends_on_seed_and_iteration_only() -> None:
    segmentor, batch = tiny_segmentor(), tiny_batch()
    losses = []
    for iteration in (3, 3, 4):
        method = DACS(copy.deepcopy(segmentor), seed=7)
        method.train()
        losses.append(float(method.training_step(batch, step_at(iteration))["loss_mix"]))
    assert losses[0] == losses[1] != losses[2]


def test_target_only_never_reads_source_labels() -> None:
    segmentor, batch = tiny_segmentor(), tiny_batch()
    settings = DACSSettings(target_only=True, source_weight=0.0)
    losses = []
    for source_labels in (batch[1], torch.full_like(batch[1], 255), torch.full_like(batch[1], 999)):  # 999 breaks CE
        method = DACS(copy.deepcopy(segmentor), settings, seed=0)
        method.train()
        outputs = method.training_step((batch[0], source_labels, batch[2], batch[3]), step_at(5))
        assert "loss_source" not in outputs
        losses.append(float(outputs["loss_mix"]))
    assert losses[0] == losses[1] == losses[2]


def test_gt_mix_uses_target_labels_with_weight_one_and_no_teacher() -> None:
    method = DACS(tiny_segmentor(), DACSSettings(gt_mix=True), seed=0)
    method.train()
    calls = []
    method.teacher.register_forward_hook(lambda *args: calls.append(1))
    source_images, source_labels, target_images, target_labels = tiny_batch()
    mixed = method.mixed_batch(
        source_images, source_labels, target_images, target_labels, torch.Generator().manual_seed(2)
    )
    mask = classmix_masks(source_labels, torch.Generator().manual_seed(2))  # the first draws of the generator
    assert mask.any() and not mask.all()
    torch.testing.assert_close(mixed.labels, mix(mask, source_labels, target_labels))
    torch.testing.assert_close(mixed.weights, torch.ones(2, 64, 64))
    assert float(mixed.pseudo_weight) == 1.0 and mixed.pseudo_labels is None and not calls


def test_pasted_pixels_weigh_one_elsewhere_the_pseudo_weight() -> None:
    method = DACS(tiny_segmentor(), DACSSettings(pseudo_threshold=0.01), seed=0)  # every pixel confident
    method.train()
    source_images, source_labels, target_images, target_labels = tiny_batch()
    mixed = method.mixed_batch(
        source_images, source_labels, target_images, target_labels, torch.Generator().manual_seed(2)
    )
    mask = classmix_masks(source_labels, torch.Generator().manual_seed(2))[:, 0]
    top, bottom = scaled_rows(15, 64, 512), scaled_rows(120, 64, 512)
    expected = torch.ones(2, 64, 64)
    expected[:, :top] = 0.0
    expected[:, 64 - bottom :] = 0.0
    expected[mask] = 1.0
    torch.testing.assert_close(mixed.weights, expected)
    torch.testing.assert_close(mixed.labels[mask], source_labels[mask])
    torch.testing.assert_close(mixed.labels[~mask], mixed.pseudo_labels[~mask])


def test_settings_are_strict_and_checked() -> None:
    with pytest.raises(ValidationError, match="extra"):
        DACSSettings(alpha_teacher=0.99)
    with pytest.raises(ValidationError, match="blur_sigma"):
        DACSSettings(blur_sigma=(1.0, 0.5))
    with pytest.raises(ValueError, match="fd_thing_ids"):
        build_dacs(tiny_segmentor(), DACSSettings(use_feature_distance=True, fd_thing_ids=[25]), seed=0)
    assert DACSSettings().alpha == 0.999 and DACSSettings().fd_thing_ids == [6, 7, 11, 12, 13, 14, 15, 16, 17, 18]

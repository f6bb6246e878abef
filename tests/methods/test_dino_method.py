from __future__ import annotations

import pytest
import torch

from pretrainlab.methods.tap_losses import KoLeoLossConfig
from pretrainlab.engine.schedules import StepValues
from pretrainlab.losses.koleo import koleo_per_crop
from pretrainlab.methods.tap_losses import build_tap_loss
from pretrainlab.methods.dino import DINO
from pretrainlab.models.backbones.timm_backbone import TimmBackbone
from pretrainlab.models.heads.dino import DINOHead
from pretrainlab.models.model import group_by_size
from pretrainlab.models.necks.ppm import DAPPM


def tiny_dino(freeze_last_layer_epochs: int = 0) -> DINO:
    backbone = TimmBackbone(
        "resnet18", small_input_stem=True, layers=[1, 1, 1, 1], channels=[8, 8, 16, 16]
    )
    head = DINOHead(backbone.embed_dim, 32, hidden_dim=16, bottleneck_dim=8)
    return DINO(backbone, head, freeze_last_layer_epochs=freeze_last_layer_epochs)


def step_values(iteration: int = 0, momentum: float = 0.9) -> StepValues:
    return StepValues(iteration, 0, 1e-3, 0.04, {"teacher_momentum": momentum, "teacher_temp": 0.04})


def views(batch: int = 4) -> list[torch.Tensor]:
    return [torch.randn(batch, 3, 32, 32), torch.randn(batch, 3, 32, 32)] + [torch.randn(batch, 3, 16, 16)] * 2


def test_group_by_size_keeps_order() -> None:
    groups = group_by_size(views())
    assert [len(g) for g in groups] == [2, 2]


def test_teacher_gets_no_gradient_and_stays_in_eval_mode() -> None:
    method = tiny_dino().train()
    assert not method.teacher.training and method.student.training
    batchnorms = [m for m in method.teacher.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert batchnorms and all(m.training for m in batchnorms)  # batch statistics, as official DINO
    outputs = method.training_step((views(), None), step_values())
    outputs["loss"].backward()
    assert all(p.grad is None for p in method.teacher.parameters())
    assert all(p.grad is not None for p in method.student.parameters() if p.requires_grad)
    method.eval()
    assert not any(m.training for m in batchnorms)


def test_center_moves_after_the_loss() -> None:
    method = tiny_dino()
    before = method.loss.center.clone()
    method.training_step((views(), None), step_values())
    assert not torch.equal(before, method.loss.center)


def test_update_teacher_is_an_ema() -> None:
    method = tiny_dino()
    with torch.no_grad():
        for p in method.student.parameters():
            p.add_(1.0)
    teacher_before = [p.clone() for p in method.teacher.parameters()]
    method.update_teacher(0.9)
    for before, student, teacher in zip(teacher_before, method.student.parameters(), method.teacher.parameters()):
        torch.testing.assert_close(teacher, 0.9 * before + 0.1 * student)


def test_last_layer_frozen_only_during_first_epochs() -> None:
    method = tiny_dino(freeze_last_layer_epochs=2)
    frozen = method.frozen_parameters(StepValues(19, 1, 1e-3, 0.04))
    assert {id(p) for p in frozen} == {id(p) for p in method.student.heads["dino"].last_layer.parameters()}
    assert method.frozen_parameters(StepValues(20, 2, 1e-3, 0.04)) == []


def test_dino_head_normalised_last_layer() -> None:
    head = DINOHead(12, 40, hidden_dim=16, bottleneck_dim=8, norm_last_layer=True)
    assert not head.last_layer.magnitude.requires_grad
    x = torch.randn(3, 12)
    bottleneck = torch.nn.functional.normalize(head.mlp(x), dim=-1)
    logits = head(x)
    # every prototype has unit norm, so |logit| <= 1 for an L2-normalised bottleneck
    assert logits.abs().max() <= 1.0 + 1e-5
    torch.testing.assert_close(bottleneck.norm(dim=-1), torch.ones(3))
    prototypes = head.last_layer.magnitude * torch.nn.functional.normalize(head.last_layer.direction, dim=1)
    torch.testing.assert_close(prototypes.norm(dim=1), torch.ones(40))


def dino_with_neck_and_koleo(tap: str = "neck", weight: float = 0.3) -> DINO:
    backbone = TimmBackbone("resnet18", small_input_stem=True, layers=[1, 1, 1, 1], channels=[8, 8, 16, 16])
    neck = DAPPM(backbone.out_channels[-1], 4, 12)
    head = DINOHead(12, 32, hidden_dim=16, bottleneck_dim=8)  # reads the neck's pooled output
    koleo = build_tap_loss(KoLeoLossConfig(tap=tap, weight=weight))
    return DINO(backbone, head, neck=neck, losses=[koleo])


def test_neck_in_student_and_teacher_and_koleo_on_global_crops() -> None:
    method = dino_with_neck_and_koleo()
    assert method.student.neck is not None and method.teacher.neck is not None
    assert all(not p.requires_grad for p in method.teacher.neck.parameters())
    batch_views = views()
    outputs = method.training_step((batch_views, None), step_values())
    assert {"loss", "loss_koleo_neck", "koleo_neck"} <= set(outputs)
    torch.testing.assert_close(outputs["loss_koleo_neck"], 0.3 * outputs["koleo_neck"])
    with torch.no_grad():  # the student in train mode again gives the same global-crop features (no dropout)
        neck_tap = method.student.forward_views(batch_views[:2])["neck"]
    torch.testing.assert_close(outputs["koleo_neck"], koleo_per_crop(neck_tap, 2), atol=1e-5, rtol=1e-4)
    outputs["loss_koleo_neck"].backward()
    assert all(p.grad is not None for p in method.student.neck.parameters())
    assert all(p.grad is None for p in method.student.heads.parameters())


def test_koleo_at_backbone_leaves_the_neck_to_the_dino_loss() -> None:
    method = dino_with_neck_and_koleo(tap="backbone")
    outputs = method.training_step((views(), None), step_values())
    outputs["loss_koleo_backbone"].backward()
    assert all(p.grad is None for p in method.student.neck.parameters())
    assert any(p.grad is not None for p in method.student.backbone.parameters())


@pytest.mark.parametrize("end", [1.0, 0.995])
def test_teacher_momentum_runs_a_cosine_from_the_base_to_the_final_value(end: float) -> None:
    from pretrainlab.methods.dino import DINOConfig

    config = DINOConfig(name="dino", momentum_teacher=0.99, momentum_teacher_end=end)
    momentum = config.schedules(total_iters=100, steps_per_epoch=10)["teacher_momentum"]
    assert momentum[0] == pytest.approx(0.99)
    assert momentum[50] == pytest.approx((0.99 + end) / 2)  # half-way down a cosine: the mean of its ends
    assert momentum[-1] == pytest.approx(end, abs=3e-6)  # DINO's cosine stops one step short of its end

"""DINO: self-distillation with no labels (Caron et al. 2021, arXiv:2104.14294).

The student sees every crop, the EMA teacher only the global crops; the loss is the
cross-entropy between the centred, sharpened teacher and the student over all
(teacher crop, other student crop) pairs. Teacher update and centering are visible
calls the engine makes after the optimiser step / after the loss.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from pretrainlab.engine.ema import ema_update_
from pretrainlab.engine.schedules import StepValues
from pretrainlab.losses.dino import DINOLoss
from pretrainlab.methods.base import Method
from pretrainlab.models.backbones.base import Backbone
from pretrainlab.models.heads.dino import DINOHead


class BackboneWithHead(nn.Module):
    """Backbone -> pooled features -> head, run once per group of same-size crops."""

    def __init__(self, backbone: Backbone, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, views: list[Tensor]) -> Tensor:  # [(B, C, H_v, W_v)] -> (V * B, K)
        pooled = [self.backbone(torch.cat(group)).pooled for group in group_by_size(views)]
        return self.head(torch.cat(pooled))  # (V * B, K)


def group_by_size(views: list[Tensor]) -> list[list[Tensor]]:
    """Consecutive views of equal resolution, so each group is one batched forward."""
    groups: list[list[Tensor]] = []
    for view in views:
        if groups and groups[-1][-1].shape[-2:] == view.shape[-2:]:
            groups[-1].append(view)
        else:
            groups.append([view])
    return groups


class DINO(Method):
    def __init__(
        self,
        backbone: Backbone,
        head: DINOHead,
        *,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        num_global: int = 2,
        freeze_last_layer_iters: int = 0,
    ) -> None:
        super().__init__()
        self.student = BackboneWithHead(backbone, head)
        self.teacher = copy.deepcopy(self.student)
        self.teacher.requires_grad_(False)
        out_dim = head.last_layer.direction.shape[0]
        self.loss = DINOLoss(out_dim, student_temp=student_temp, center_momentum=center_momentum)
        self.num_global = num_global
        self.freeze_last_layer_iters = freeze_last_layer_iters

    def train(self, mode: bool = True) -> DINO:
        """The teacher stays in eval mode; its BatchNorms use batch statistics while training, as in DINO."""
        super().train(mode)
        self.teacher.eval()
        for module in self.teacher.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.train(mode)
        return self

    def training_step(self, views: list[Tensor], step: StepValues) -> dict[str, Tensor]:
        global_views = views[: self.num_global]
        with torch.no_grad():
            teacher_logits = self.teacher(global_views).float()  # (G * B, K); fp32 under autocast
        student_logits = self.student(views).float()  # (V * B, K)
        loss = self.loss(student_logits, teacher_logits, teacher_temp=step.teacher_temp)
        self.loss.update_center(teacher_logits)
        return {
            "loss": loss,
            "teacher_entropy": mean_entropy(teacher_logits, self.loss.center, step.teacher_temp),
            "teacher_temp": torch.tensor(step.teacher_temp),
            "teacher_momentum": torch.tensor(step.teacher_momentum),
        }

    def frozen_parameters(self, step: StepValues) -> list[nn.Parameter]:
        if step.iteration < self.freeze_last_layer_iters:
            return list(self.student.head.last_layer.parameters())
        return []

    def after_optimizer_step(self, step: StepValues) -> None:
        self.update_teacher(step.teacher_momentum)

    def update_teacher(self, momentum: float) -> None:
        ema_update_(self.teacher, self.student, momentum)

    def eval_backbone(self) -> Backbone:
        return self.teacher.backbone


@torch.no_grad()
def mean_entropy(teacher_logits: Tensor, center: Tensor, teacher_temp: float) -> Tensor:
    """Mean entropy of the centred, sharpened teacher distribution: ln K at collapse to uniform, 0 at one-hot."""
    probs = torch.softmax((teacher_logits - center) / teacher_temp, dim=-1)
    return -(probs * torch.log(probs.clamp_min(1e-12))).sum(-1).mean()

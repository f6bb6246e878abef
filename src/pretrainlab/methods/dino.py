"""DINO: self-distillation with no labels (Caron et al. 2021, arXiv:2104.14294).

The student sees every crop, the EMA teacher only the global crops; the loss is the
cross-entropy between the centred, sharpened teacher and the student over all
(teacher crop, other student crop) pairs. Teacher update and centering are visible
calls the engine makes after the optimiser step / after the loss.

Student and teacher are each a `Model` (backbone -> optional neck -> DINO head); with a
neck the DINO head reads the neck's pooled output. Extra losses attached to taps
(e.g. KoLeo at `backbone` or `neck`) act on the student's global crops, one crop block
at a time, and appear as `loss_<name>_<tap>` in the step outputs.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pretrainlab.engine.ema import ema_update_
from pretrainlab.engine.schedules import StepValues
from pretrainlab.losses.dino import DINOLoss
from pretrainlab.losses.on_taps import TapLoss, tap_losses
from pretrainlab.methods.base import Method
from pretrainlab.models.backbones.base import Backbone
from pretrainlab.models.heads.dino import DINOHead
from pretrainlab.models.model import Model
from pretrainlab.models.necks.ppm import Neck


class DINO(Method):
    """DINO with an optional neck and losses on taps.

    Args:
        backbone: the student backbone (the teacher is a copy).
        head: DINO head reading `backbone.embed_dim`, or the neck's `out_channels` with a neck
            (or the final map's channels with `restore_stride` and no neck: `Model.feature_dim`).
        neck: optional neck on the backbone's final map.
        restore_stride: see `models/model.py`.
        losses: extra losses on the student's taps (global crops only).
        student_temp, center_momentum: of `DINOLoss`.
        num_global: number of global crops G (the first G views).
        freeze_last_layer_iters: iterations during which the head's last layer gets no update.
    """

    def __init__(
        self,
        backbone: Backbone,
        head: DINOHead,
        *,
        neck: Neck | None = None,
        restore_stride: int | None = None,
        losses: Sequence[TapLoss] = (),
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        num_global: int = 2,
        freeze_last_layer_iters: int = 0,
    ) -> None:
        super().__init__()
        self.student = Model(backbone, {"dino": head}, neck, restore_stride=restore_stride)
        self.teacher = copy.deepcopy(self.student)
        self.teacher.requires_grad_(False)
        out_dim = head.last_layer.direction.shape[0]
        self.loss = DINOLoss(out_dim, student_temp=student_temp, center_momentum=center_momentum)
        self.tap_losses = list(losses)
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

    def training_step(
        self, views: list[Tensor], step: StepValues, labels: Tensor | None = None
    ) -> dict[str, Tensor]:
        global_views = views[: self.num_global]
        with torch.no_grad():
            teacher_logits = self.teacher.forward_views(global_views)["head:dino"].float()  # (G * B, K); fp32
        student_taps = self.student.forward_views(views)  # {tap: (V * B, ...)}
        student_logits = student_taps["head:dino"].float()  # (V * B, K)
        loss = self.loss(student_logits, teacher_logits, teacher_temp=step.teacher_temp)
        self.loss.update_center(teacher_logits)
        global_rows = teacher_logits.shape[0]  # G * B: the global crops come first
        global_taps = {name: value[:global_rows] for name, value in student_taps.items()}
        return {
            "loss": loss,
            **tap_losses(self.tap_losses, global_taps, self.num_global),
            "teacher_entropy": mean_entropy(teacher_logits, self.loss.center, step.teacher_temp),
            "teacher_temp": torch.tensor(step.teacher_temp),
            "teacher_momentum": torch.tensor(step.teacher_momentum),
        }

    def frozen_parameters(self, step: StepValues) -> list[nn.Parameter]:
        if step.iteration < self.freeze_last_layer_iters:
            return list(self.student.heads["dino"].last_layer.parameters())
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

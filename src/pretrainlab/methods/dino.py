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
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor, nn

from pretrainlab.config.component import FractionRange, Probability
from pretrainlab.data.loaders import views_train_data
from pretrainlab.data.train_data import TrainData
from pretrainlab.data.transforms.views import MultiCropViews
from pretrainlab.engine.ema import ema_update_
from pretrainlab.engine.schedules import StepValues, cosine_schedule
from pretrainlab.losses.dino import DINOLoss
from pretrainlab.methods._view_config import ColourJitterConfig
from pretrainlab.methods.base import METHODS, Method, MethodConfig, build_trunk, trunk_taps
from pretrainlab.methods.tap_losses import TAP_LOSSES, TapLoss, build_tap_loss, check_taps, tap_losses
from pretrainlab.models.backbones.base import Backbone
from pretrainlab.models.heads.dino import DINOHead, DINOHeadConfig, build_dino_head
from pretrainlab.models.model import Model
from pretrainlab.models.necks.base import Neck

if TYPE_CHECKING:
    from pretrainlab.config.schema import Config


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
        freeze_last_layer_epochs: epochs during which the head's last layer gets no update.
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
        freeze_last_layer_epochs: int = 0,
    ) -> None:
        super().__init__()
        self.student = Model(backbone, {"dino": head}, neck, restore_stride=restore_stride)
        self.teacher = copy.deepcopy(self.student)
        self.teacher.requires_grad_(False)
        out_dim = head.last_layer.direction.shape[0]
        self.loss = DINOLoss(out_dim, student_temp=student_temp, center_momentum=center_momentum, num_global=num_global)
        self.tap_losses = list(losses)
        self.num_global = num_global
        self.freeze_last_layer_epochs = freeze_last_layer_epochs

    def train(self, mode: bool = True) -> DINO:
        """The teacher stays in eval mode; its BatchNorms use batch statistics while training, as in DINO."""
        super().train(mode)
        self.teacher.eval()
        for module in self.teacher.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.train(mode)
        return self

    def training_step(self, batch: tuple[list[Tensor], Tensor], step: StepValues) -> dict[str, Tensor]:
        """batch: ([(B, C, H_v, W_v) per crop, global crops first], labels (B,), unused)."""
        views, _ = batch
        global_views = views[: self.num_global]
        with torch.no_grad():
            teacher_logits = self.teacher.forward_views(global_views)["head:dino"].float()  # (G * B, K); fp32
        student_taps = self.student.forward_views(views)  # {tap: (V * B, ...)}
        student_logits = student_taps["head:dino"].float()  # (V * B, K)
        loss = self.loss(student_logits, teacher_logits, teacher_temp=step["teacher_temp"])
        self.loss.update_center(teacher_logits)
        global_rows = teacher_logits.shape[0]  # G * B: the global crops come first
        global_taps = {name: value[:global_rows] for name, value in student_taps.items()}
        return {
            "loss": loss,
            **tap_losses(self.tap_losses, global_taps, self.num_global),
            "teacher_entropy": mean_entropy(teacher_logits, self.loss.center, step["teacher_temp"]),
        }

    def frozen_parameters(self, step: StepValues) -> list[nn.Parameter]:
        if step.epoch < self.freeze_last_layer_epochs:
            return list(self.student.heads["dino"].last_layer.parameters())
        return []

    def after_optimizer_step(self, step: StepValues) -> None:
        self.update_teacher(step["teacher_momentum"])

    def update_teacher(self, momentum: float) -> None:
        ema_update_(self.teacher, self.student, momentum)

    def eval_backbone(self) -> Backbone:
        return self.teacher.backbone


@torch.no_grad()
def mean_entropy(teacher_logits: Tensor, center: Tensor, teacher_temp: float) -> Tensor:
    """Mean entropy of the centred, sharpened teacher distribution: ln K at collapse to uniform, 0 at one-hot."""
    probs = torch.softmax((teacher_logits - center) / teacher_temp, dim=-1)
    return -(probs * torch.log(probs.clamp_min(1e-12))).sum(-1).mean()


class MultiCropConfig(ColourJitterConfig):
    """DINO multi-crop views (Caron et al. 2021): arguments of `MultiCropViews`."""

    num_global: int = Field(2, ge=1, description="global crops: the teacher sees these, the student all crops")
    global_size: int = Field(32, ge=8)
    global_scale: FractionRange = (0.4, 1.0)
    num_local: int = Field(4, ge=0)
    local_size: int = Field(16, ge=4)
    local_scale: FractionRange = (0.05, 0.4)
    global_blur_p: tuple[Probability, Probability] = (1.0, 0.1)
    local_blur_p: float = Field(0.5, ge=0.0, le=1.0)
    solarize_p: float = Field(0.2, ge=0.0, le=1.0)
    flip_p: float = Field(0.5, ge=0.0, le=1.0)
    rotation_p: float = Field(0.0, ge=0.0, le=1.0, description="probability of a random rotation of each crop")
    rotation_degrees: float = Field(180.0, ge=0.0, le=180.0, description="rotation angle ~ U(-d, d)")
    invert_p: float = Field(0.0, ge=0.0, le=1.0, description="probability of the negative image (1 - x)")


class DINOConfig(MethodConfig):
    """DINO self-distillation (Caron et al. 2021, arXiv:2104.14294)."""

    name: Literal["dino"]
    head: DINOHeadConfig = Field(default_factory=DINOHeadConfig)
    crops: MultiCropConfig = Field(default_factory=MultiCropConfig)
    student_temp: float = Field(0.1, gt=0.0)
    teacher_temp: float = Field(0.04, gt=0.0, description="final teacher temperature")
    warmup_teacher_temp: float = Field(0.04, gt=0.0)
    warmup_teacher_temp_epochs: int = Field(0, ge=0)
    momentum_teacher: float = Field(0.996, ge=0.0, le=1.0, description="base EMA momentum, cosine to the final")
    momentum_teacher_end: float = Field(
        1.0, ge=0.0, le=1.0, description="final EMA momentum (DINO: 1; below 1 the teacher keeps following to the end)"
    )
    center_momentum: float = Field(0.9, ge=0.0, lt=1.0)
    freeze_last_layer_epochs: int = Field(1, ge=0)
    losses: list[TAP_LOSSES.config_type()] = Field(  # type: ignore[valid-type]
        default_factory=list, description="extra losses on taps of the student's global crops, e.g. koleo at neck"
    )

    def check(self, config: Config) -> None:
        super().check(config)
        if self.warmup_teacher_temp_epochs > config.engine.max_epochs:
            raise ValueError(
                f"method.warmup_teacher_temp_epochs={self.warmup_teacher_temp_epochs} exceeds "
                f"engine.max_epochs={config.engine.max_epochs}"
            )
        check_taps(self.losses, [*trunk_taps(config), "head:dino"], has_labels=False, key="method.losses")

    def schedules(self, total_iters: int, steps_per_epoch: int) -> dict[str, np.ndarray]:
        """Teacher momentum: cosine from `momentum_teacher` to `momentum_teacher_end`; teacher temperature: linear
        warm-up, then flat."""
        warmup = min(self.warmup_teacher_temp_epochs * steps_per_epoch, total_iters)
        teacher_temp = np.concatenate([np.linspace(self.warmup_teacher_temp, self.teacher_temp, warmup),
                                       np.full(total_iters - warmup, self.teacher_temp)])  # fmt: skip
        return {"teacher_momentum": cosine_schedule(self.momentum_teacher, self.momentum_teacher_end, total_iters), "teacher_temp": teacher_temp}

    def train_data(self, config: Config) -> TrainData:
        mean, std = config.data.mean_std
        return views_train_data(config, MultiCropViews(**self.crops.model_dump(), mean=mean, std=std))


@METHODS.register(DINOConfig)
def build_dino(config: Config) -> DINO:
    method: DINOConfig = config.method
    trunk = build_trunk(config)
    return DINO(
        trunk.backbone,
        build_dino_head(method.head, trunk.head_in_dim),
        neck=trunk.neck,
        restore_stride=trunk.restore_stride,
        losses=[build_tap_loss(loss) for loss in method.losses],
        student_temp=method.student_temp,
        center_momentum=method.center_momentum,
        num_global=method.crops.num_global,
        freeze_last_layer_epochs=method.freeze_last_layer_epochs,
    )

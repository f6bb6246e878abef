"""Supervised pretraining: backbone -> neck -> classification head, cross-entropy with label
smoothing (Szegedy et al. 2016, "Rethinking the Inception Architecture", Sec. 7).

One augmented view per image. With a multi-task head every task is trained on the same
labels and the task losses are summed with the head's weights. Extra losses on taps
(KoLeo at `backbone` / `neck`, cross-entropy on another head) are added as
`loss_<name>_<tap>`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from pretrainlab.config.component import FractionRange
from pretrainlab.data.loaders import dataset_num_classes, views_train_data
from pretrainlab.data.train_data import TrainData
from pretrainlab.data.transforms.views import MultiCropViews
from pretrainlab.engine.schedules import StepValues
from pretrainlab.losses.cross_entropy import classification_cross_entropy
from pretrainlab.methods._view_config import ColourJitterConfig
from pretrainlab.methods.base import METHODS, Method, MethodConfig, build_trunk, trunk_taps
from pretrainlab.methods.tap_losses import TAP_LOSSES, TapLoss, build_tap_loss, check_taps, tap_losses
from pretrainlab.models.heads.base import HEADS, build_head
from pretrainlab.models.backbones.base import Backbone
from pretrainlab.models.heads.multi_task import MultiTaskHead
from pretrainlab.models.model import Model
from pretrainlab.models.necks.base import Neck

if TYPE_CHECKING:
    from pretrainlab.config.schema import Config


class Supervised(Method):
    """Classification pretraining of `backbone` (+ `neck`) through `head`.

    Args:
        backbone: the backbone to pretrain (what is evaluated).
        head: a classification head reading `Model.feature_dim`, or a `MultiTaskHead` of them.
        head_name: name of the head; its tap is `head:<head_name>` (`head:<task>` per task of a multi-task head).
        neck: optional neck on the backbone's final map.
        restore_stride: see `models/model.py`.
        label_smoothing: epsilon of the cross-entropy.
        losses: extra losses on taps.
    """

    def __init__(
        self,
        backbone: Backbone,
        head: nn.Module,
        *,
        head_name: str = "cls",
        neck: Neck | None = None,
        restore_stride: int | None = None,
        label_smoothing: float = 0.1,
        losses: Sequence[TapLoss] = (),
    ) -> None:
        super().__init__()
        self.model = Model(backbone, {head_name: head}, neck, restore_stride=restore_stride)
        self.head_name = head_name
        self.label_smoothing = label_smoothing
        self.tap_losses = list(losses)

    def training_step(self, batch: tuple[list[Tensor], Tensor], step: StepValues) -> dict[str, Tensor]:
        """batch: ([one view (B, C, H, W)], labels (B,))."""
        views, labels = batch
        if len(views) != 1:
            raise ValueError(f"supervised training needs one view per image, got {len(views)}")
        taps = self.model(views[0])  # {tap: (B, ...)}
        head = self.model.heads[self.head_name]
        tasks = list(head.heads) if isinstance(head, MultiTaskHead) else [self.head_name]
        task_losses = {
            task: classification_cross_entropy(taps[f"head:{task}"].float(), labels, self.label_smoothing)
            for task in tasks
        }
        loss = head.weighted_sum(task_losses) if isinstance(head, MultiTaskHead) else task_losses[self.head_name]
        with torch.no_grad():
            accuracy = (taps[f"head:{tasks[0]}"].argmax(dim=1) == labels).float().mean()
        outputs = {"loss": loss, "accuracy": accuracy, **tap_losses(self.tap_losses, taps, 1, labels)}
        if isinstance(head, MultiTaskHead):
            outputs |= {f"cross_entropy_{task}": value.detach() for task, value in task_losses.items()}
        return outputs

    def eval_backbone(self) -> Backbone:
        return self.model.backbone


class SupervisedViewConfig(ColourJitterConfig):
    """One augmented view per image: a DINO global crop (`MultiCropViews` with one crop, no solarize)."""

    size: int = Field(32, ge=8)
    scale: FractionRange = (0.2, 1.0)
    blur_p: float = Field(0.0, ge=0.0, le=1.0)
    flip_p: float = Field(0.5, ge=0.0, le=1.0)


class SupervisedConfig(MethodConfig):
    """Supervised pretraining: backbone -> neck -> classification head, cross-entropy with label smoothing."""

    name: Literal["supervised"]
    uses_labels: ClassVar[bool] = True
    head: HEADS.config_type("linear") = Field(default_factory=HEADS.default_factory("linear"))  # type: ignore[valid-type]
    view: SupervisedViewConfig = Field(default_factory=SupervisedViewConfig)
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    losses: list[TAP_LOSSES.config_type()] = Field(default_factory=list, description="extra losses on taps")  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _check_head(self) -> SupervisedConfig:
        if not self.head.predicts_classes:
            raise ValueError(f"head: '{self.head.name}' does not predict classes; use linear, cls or multi_task")
        return self

    def check(self, config: Config) -> None:
        super().check(config)
        taps = [*trunk_taps(config), *self.head.tap_names(self.head.name)]
        check_taps(self.losses, taps, has_labels=True, key="method.losses")

    def train_data(self, config: Config) -> TrainData:
        """One labelled view per image: a single DINO global crop (no solarize)."""
        view, (mean, std) = self.view, config.data.mean_std
        views = MultiCropViews(
            num_global=1, num_local=0, global_size=view.size, global_scale=view.scale, brightness=view.brightness,
            contrast=view.contrast, saturation=view.saturation, hue=view.hue, color_jitter_p=view.color_jitter_p,
            grayscale_p=view.grayscale_p, global_blur_p=(view.blur_p, view.blur_p), solarize_p=0.0,
            flip_p=view.flip_p, mean=mean, std=std,
        )  # fmt: skip
        return views_train_data(config, views)


@METHODS.register(SupervisedConfig)
def build_supervised(config: Config) -> Supervised:
    method: SupervisedConfig = config.method
    trunk = build_trunk(config)
    head = build_head(method.head.with_num_classes(dataset_num_classes(config)), trunk.head_in_dim)
    return Supervised(
        trunk.backbone,
        head,
        head_name=method.head.name,
        neck=trunk.neck,
        restore_stride=trunk.restore_stride,
        label_smoothing=method.label_smoothing,
        losses=[build_tap_loss(loss) for loss in method.losses],
    )

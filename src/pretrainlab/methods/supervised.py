"""Supervised pretraining: backbone -> neck -> classification head, cross-entropy with label
smoothing (Szegedy et al. 2016, "Rethinking the Inception Architecture", Sec. 7).

One augmented view per image. With a multi-task head every task is trained on the same
labels and the task losses are summed with the head's weights. Extra losses on taps
(KoLeo at `backbone` / `neck`, cross-entropy on another head) are added as
`loss_<name>_<tap>`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pretrainlab.engine.schedules import StepValues
from pretrainlab.losses.cross_entropy import classification_cross_entropy
from pretrainlab.losses.on_taps import TapLoss, tap_losses
from pretrainlab.methods.base import Method
from pretrainlab.models.backbones.base import Backbone
from pretrainlab.models.heads.multi_task import MultiTaskHead
from pretrainlab.models.model import Model
from pretrainlab.models.necks.ppm import Neck


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

    def training_step(self, views: list[Tensor], step: StepValues, labels: Tensor | None = None) -> dict[str, Tensor]:
        if len(views) != 1 or labels is None:
            raise ValueError(f"supervised training needs one view and labels, got {len(views)} views, labels={labels}")
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

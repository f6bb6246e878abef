"""SimCLR: contrastive learning of visual representations (Chen et al. 2020, arXiv:2002.05709).

Two augmented views per image, a projection MLP, and NT-Xent with negatives from the
whole (gathered) batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pretrainlab.engine.schedules import StepValues
from pretrainlab.losses.infonce import info_nce_loss
from pretrainlab.methods.base import Method
from pretrainlab.models.backbones.base import Backbone
from pretrainlab.models.heads.projection import ProjectionHead


class SimCLR(Method):
    def __init__(self, backbone: Backbone, head: ProjectionHead, *, temperature: float = 0.2) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.temperature = temperature

    def training_step(self, views: list[Tensor], step: StepValues, labels: Tensor | None = None) -> dict[str, Tensor]:
        if len(views) != 2:
            raise ValueError(f"SimCLR expects 2 views per image, got {len(views)}")
        batch = len(views[0])
        pooled = self.backbone(torch.cat(views)).pooled  # (2B, D)
        z = self.head(pooled).float()  # (2B, P)
        with torch.autocast(device_type=z.device.type, enabled=False):  # similarities in fp32
            loss = info_nce_loss(z[:batch], z[batch:], temperature=self.temperature)
        return {"loss": loss}

    def eval_backbone(self) -> Backbone:
        return self.backbone


"""SimCLR: contrastive learning of visual representations (Chen et al. 2020, arXiv:2002.05709).

Two augmented views per image, a projection MLP, and NT-Xent with negatives from the
whole (gathered) batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor

from pretrainlab.config.component import FractionRange, Strict
from pretrainlab.data.loaders import views_train_data
from pretrainlab.data.train_data import TrainData
from pretrainlab.data.transforms.views import TwoViews
from pretrainlab.engine.schedules import StepValues
from pretrainlab.losses.infonce import info_nce_loss
from pretrainlab.methods.base import METHODS, Method, MethodConfig
from pretrainlab.models.backbones.base import Backbone, build_backbone
from pretrainlab.models.heads.projection import ProjectionHead

if TYPE_CHECKING:
    from pretrainlab.config.schema import Config


class SimCLR(Method):
    def __init__(self, backbone: Backbone, head: ProjectionHead, *, temperature: float = 0.2) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.temperature = temperature

    def training_step(self, batch: tuple[list[Tensor], Tensor], step: StepValues) -> dict[str, Tensor]:
        """batch: ([two views (B, C, H, W)], labels (B,), unused)."""
        views, _ = batch
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


class TwoViewConfig(Strict):
    """SimCLR views (Chen et al. 2020): arguments of `TwoViews`."""

    size: int = Field(32, ge=8)
    scale: FractionRange = (0.2, 1.0)
    color_strength: float = Field(0.5, ge=0.0, le=1.25, description="jitter (0.8s, 0.8s, 0.8s, 0.2s)")
    color_jitter_p: float = Field(0.8, ge=0.0, le=1.0)
    hue: float | None = Field(None, ge=0.0, le=0.5, description="hue jitter; null = 0.2 * color_strength")
    grayscale_p: float = Field(0.3, ge=0.0, le=1.0)
    blur_p: float = Field(0.0, ge=0.0, le=1.0)
    flip_p: float = Field(0.5, ge=0.0, le=1.0)
    rotation_p: float = Field(0.0, ge=0.0, le=1.0, description="probability of a random rotation of each view")
    rotation_degrees: float = Field(180.0, ge=0.0, le=180.0, description="rotation angle ~ U(-d, d)")
    invert_p: float = Field(0.0, ge=0.0, le=1.0, description="probability of the negative image (1 - x)")


class SimCLRConfig(MethodConfig):
    """SimCLR with NT-Xent (Chen et al. 2020, arXiv:2002.05709)."""

    name: Literal["simclr"]
    uses_neck: ClassVar[bool] = False
    views: TwoViewConfig = Field(default_factory=TwoViewConfig)
    temperature: float = Field(0.2, gt=0.0)
    proj_hidden_dim: int = Field(512, ge=1)
    proj_out_dim: int = Field(128, ge=1)

    def train_data(self, config: Config) -> TrainData:
        mean, std = config.data.mean_std
        return views_train_data(config, TwoViews(**self.views.model_dump(), mean=mean, std=std))


@METHODS.register(SimCLRConfig)
def build_simclr(config: Config) -> SimCLR:
    method: SimCLRConfig = config.method
    backbone = build_backbone(config.backbone, config.in_chans)
    head = ProjectionHead(backbone.embed_dim, method.proj_hidden_dim, method.proj_out_dim)
    return SimCLR(backbone, head, temperature=method.temperature)

"""SupCon: supervised contrastive learning (Khosla et al. 2020, arXiv:2004.11362).

SimCLR's views and projection head, with the class labels of the batch deciding the
positives: every other view of every sample of the same class (`losses/infonce.py`,
`supcon_loss`). The projections are L2-normalised and the loss is computed in fp32
outside autocast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from pretrainlab.data.loaders import views_train_data
from pretrainlab.data.train_data import TrainData
from pretrainlab.data.transforms.views import TwoViews
from pretrainlab.engine.schedules import StepValues
from pretrainlab.losses.infonce import supcon_loss
from pretrainlab.methods.base import METHODS, Method, MethodConfig
from pretrainlab.methods.simclr import TwoViewConfig
from pretrainlab.models.backbones.base import Backbone, build_backbone
from pretrainlab.models.heads.projection import ProjectionHead

if TYPE_CHECKING:
    from pretrainlab.config.schema import Config


class SupCon(Method):
    """Backbone -> projection head -> unit sphere, trained with the SupCon loss.

    Args:
        backbone: the backbone to pretrain (what is evaluated).
        head: projection head reading `backbone.embed_dim`.
        temperature, base_temperature, contrast_mode: of `supcon_loss`.
    """

    def __init__(
        self,
        backbone: Backbone,
        head: ProjectionHead,
        *,
        temperature: float = 0.07,
        base_temperature: float = 0.07,
        contrast_mode: Literal["all", "one"] = "all",
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.temperature = temperature
        self.base_temperature = base_temperature
        self.contrast_mode = contrast_mode

    def training_step(self, batch: tuple[list[Tensor], Tensor], step: StepValues) -> dict[str, Tensor]:
        """batch: ([V views (B, C, H, W)], labels (B,))."""
        views, labels = batch
        shapes = [tuple(view.shape) for view in views]
        if len(views) < 2 or len(set(shapes)) != 1 or shapes[0][0] != len(labels):
            raise ValueError(f"SupCon expects 2 or more views of one shape (B, C, H, W) and labels (B,), got views "
                             f"{shapes} and labels {tuple(labels.shape)}")  # fmt: skip
        num_views, batch_size = len(views), len(labels)
        pooled = self.backbone(torch.cat(views)).pooled  # (V*B, D), view-major
        z = self.head(pooled).float()  # (V*B, P)
        with torch.autocast(device_type=z.device.type, enabled=False):  # similarities in fp32
            z = F.normalize(z, dim=-1).view(num_views, batch_size, -1).transpose(0, 1)  # (B, V, P)
            loss = supcon_loss(
                z,
                labels,
                temperature=self.temperature,
                base_temperature=self.base_temperature,
                contrast_mode=self.contrast_mode,
            )
        return {"loss": loss}

    def eval_backbone(self) -> Backbone:
        return self.backbone


class ManyViews:
    """`num_views` SimCLR views of one image: `TwoViews` drawn ceil(V / 2) times (an odd V drops the last view).

    Returns:
        list of V float32 tensors (C, size, size).
    """

    def __init__(self, two_views: TwoViews, num_views: int) -> None:
        if num_views < 1:
            raise ValueError(f"num_views must be >= 1, got {num_views}")
        self.two_views = two_views
        self.num_views = num_views

    def __call__(self, image: np.ndarray) -> list[Tensor]:
        views = [view for _ in range((self.num_views + 1) // 2) for view in self.two_views(image)]
        return views[: self.num_views]


class SupConConfig(MethodConfig):
    """Supervised contrastive learning (Khosla et al. 2020, arXiv:2004.11362) on SimCLR's views."""

    name: Literal["supcon"]
    uses_labels: ClassVar[bool] = True
    uses_neck: ClassVar[bool] = False
    views: TwoViewConfig = Field(default_factory=TwoViewConfig)
    num_views: int = Field(2, ge=2, description="augmented views per image (the paper uses 2)")
    temperature: float = Field(0.07, gt=0.0)
    base_temperature: float = Field(0.07, gt=0.0, description="the loss is scaled by temperature / base_temperature")
    contrast_mode: Literal["all", "one"] = Field("all", description="anchors: every view, or view 0 only")
    proj_hidden_dim: int = Field(512, ge=1)
    proj_out_dim: int = Field(128, ge=1)

    def train_data(self, config: Config) -> TrainData:
        mean, std = config.data.mean_std
        two_views = TwoViews(**self.views.model_dump(), mean=mean, std=std)
        return views_train_data(config, ManyViews(two_views, self.num_views))


@METHODS.register(SupConConfig)
def build_supcon(config: Config) -> SupCon:
    method: SupConConfig = config.method
    backbone = build_backbone(config.backbone, config.in_chans)
    head = ProjectionHead(backbone.embed_dim, method.proj_hidden_dim, method.proj_out_dim)
    return SupCon(
        backbone,
        head,
        temperature=method.temperature,
        base_temperature=method.base_temperature,
        contrast_mode=method.contrast_mode,
    )

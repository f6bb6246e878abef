"""Pretraining methods, built from a validated config."""

from __future__ import annotations

from pretrainlab.config.schema import Config, DINOConfig, SimCLRConfig
from pretrainlab.methods.base import Method
from pretrainlab.methods.dino import DINO
from pretrainlab.methods.simclr import SimCLR
from pretrainlab.models.backbones import build_backbone
from pretrainlab.models.heads.dino import DINOHead
from pretrainlab.models.heads.projection import ProjectionHead


def build_method(config: Config, steps_per_epoch: int) -> Method:
    backbone = build_backbone(config.backbone)
    method = config.method
    if isinstance(method, DINOConfig):
        head = DINOHead(backbone.embed_dim, **method.head.model_dump())
        return DINO(
            backbone,
            head,
            student_temp=method.student_temp,
            center_momentum=method.center_momentum,
            num_global=method.crops.num_global,
            freeze_last_layer_iters=method.freeze_last_layer_epochs * steps_per_epoch,
        )
    if isinstance(method, SimCLRConfig):
        head = ProjectionHead(backbone.embed_dim, method.proj_hidden_dim, method.proj_out_dim)
        return SimCLR(backbone, head, temperature=method.temperature)
    raise ValueError(f"unknown method '{method.name}'")


__all__ = ["DINO", "Method", "SimCLR", "build_method"]

"""Pretraining methods, built from a validated config."""

from __future__ import annotations

from pretrainlab.config.schema import Config, DINOConfig, SimCLRConfig, SupervisedConfig
from pretrainlab.losses.on_taps import build_tap_loss
from pretrainlab.methods.base import Method
from pretrainlab.methods.dino import DINO
from pretrainlab.methods.simclr import SimCLR
from pretrainlab.methods.supervised import Supervised
from pretrainlab.models.backbones import build_backbone
from pretrainlab.models.heads import build_head, resolve_num_classes
from pretrainlab.models.heads.projection import ProjectionHead
from pretrainlab.models.model import head_input_dim
from pretrainlab.models.necks import build_neck


def build_method(config: Config, steps_per_epoch: int) -> Method:
    backbone = build_backbone(config.backbone)
    method = config.method
    if isinstance(method, SimCLRConfig):
        head = ProjectionHead(backbone.embed_dim, method.proj_hidden_dim, method.proj_out_dim)
        return SimCLR(backbone, head, temperature=method.temperature)
    neck = build_neck(config.neck, backbone)
    restore_stride = config.neck.restore_stride
    in_dim = head_input_dim(backbone, neck, restore_stride)
    losses = [build_tap_loss(loss) for loss in method.losses]
    if isinstance(method, DINOConfig):
        return DINO(
            backbone,
            build_head(method.head, in_dim),
            neck=neck,
            restore_stride=restore_stride,
            losses=losses,
            student_temp=method.student_temp,
            center_momentum=method.center_momentum,
            num_global=method.crops.num_global,
            freeze_last_layer_iters=method.freeze_last_layer_epochs * steps_per_epoch,
        )
    if isinstance(method, SupervisedConfig):
        from pretrainlab.data.loaders import dataset_num_classes

        head_config = resolve_num_classes(method.head, dataset_num_classes(config))
        return Supervised(
            backbone,
            build_head(head_config, in_dim),
            head_name=method.head.name,
            neck=neck,
            restore_stride=restore_stride,
            label_smoothing=method.label_smoothing,
            losses=losses,
        )
    raise ValueError(f"unknown method '{method.name}'")


__all__ = ["DINO", "Method", "SimCLR", "Supervised", "build_method"]

"""Backbones by name; every one implements the Backbone API of `base.py`."""

from __future__ import annotations

from collections.abc import Callable

from pretrainlab.config.schema import BackboneConfig, SEBNetConfig, TimmBackboneConfig
from pretrainlab.models.backbones.base import Backbone, Features
from pretrainlab.models.backbones.sebnet import SEBNet
from pretrainlab.models.backbones.timm_backbone import TimmBackbone
from pretrainlab.registry import Registry

BACKBONES: Registry[Callable[..., Backbone]] = Registry("backbone")


@BACKBONES.register("timm")
def build_timm(config: TimmBackboneConfig) -> Backbone:
    return TimmBackbone(
        config.arch,
        in_chans=config.in_chans,
        img_size=config.img_size,
        patch_size=config.patch_size,
        small_input_stem=config.small_input_stem,
        drop_path_rate=config.drop_path_rate,
        checkpoint=config.checkpoint,
        **config.kwargs,
    )


@BACKBONES.register("sebnet")
def build_sebnet(config: SEBNetConfig) -> Backbone:
    backbone = SEBNet(config.size, in_chans=config.in_chans, zero_init_residual=config.zero_init_residual)
    if config.checkpoint is not None:
        from pretrainlab.models.checkpoint import load_backbone_checkpoint

        load_backbone_checkpoint(backbone, config.checkpoint)
    return backbone


def build_backbone(config: BackboneConfig) -> Backbone:
    """Build the backbone a config names (configs are already validated)."""
    return BACKBONES.get(config.name)(config)


__all__ = ["BACKBONES", "Backbone", "Features", "SEBNet", "TimmBackbone", "build_backbone"]

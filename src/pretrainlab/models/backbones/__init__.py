"""Backbones by name; every one implements the Backbone API of `base.py`."""

from __future__ import annotations

from collections.abc import Callable

from pretrainlab.config.schema import TimmBackboneConfig
from pretrainlab.models.backbones.base import Backbone, Features
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


def build_backbone(config: TimmBackboneConfig) -> Backbone:
    """Build the backbone a config names (configs are already validated)."""
    return BACKBONES.get(config.name)(config)


__all__ = ["BACKBONES", "Backbone", "Features", "TimmBackbone", "build_backbone"]

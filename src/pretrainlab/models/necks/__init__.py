"""Necks by name (`none`, `dappm`, `pappm`); a neck reads the backbone's final map."""

from __future__ import annotations

from collections.abc import Callable

from pretrainlab.config.schema import DAPPMConfig, NeckConfig, NoNeckConfig, PAPPMConfig
from pretrainlab.models.backbones.base import Backbone
from pretrainlab.models.necks.ppm import DAPPM, PAPPM, Neck
from pretrainlab.registry import Registry

NECKS: Registry[Callable[..., Neck | None]] = Registry("neck")


@NECKS.register("none")
def build_no_neck(config: NoNeckConfig, backbone: Backbone) -> None:
    return None


@NECKS.register("dappm")
def build_dappm(config: DAPPMConfig, backbone: Backbone) -> Neck:
    in_channels = backbone.out_channels[backbone.final_map_index]
    out_channels = config.out_channels or backbone.out_channels[0]
    return DAPPM(in_channels, config.branch_channels, out_channels, count_include_pad=config.count_include_pad)


@NECKS.register("pappm")
def build_pappm(config: PAPPMConfig, backbone: Backbone) -> Neck:
    in_channels = backbone.out_channels[backbone.final_map_index]
    out_channels = config.out_channels or backbone.out_channels[0]
    return PAPPM(in_channels, config.branch_channels, out_channels, count_include_pad=config.count_include_pad)


def build_neck(config: NeckConfig, backbone: Backbone) -> Neck | None:
    """The neck a config names, sized for `backbone`'s final map; None for `name: none`."""
    return NECKS.get(config.name)(config, backbone)


__all__ = ["DAPPM", "NECKS", "PAPPM", "Neck", "build_neck"]

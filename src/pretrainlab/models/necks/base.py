"""The neck API, the neck registry and `none` (no neck).

A neck reads the backbone's final map, `maps[backbone.final_map_index]`:
forward(map (B, C_in, H, W)) -> (B, out_channels, H, W).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor, nn

from pretrainlab.config.component import Component
from pretrainlab.models.backbones.base import Backbone
from pretrainlab.registry import Registry


class Neck(nn.Module):
    """Base API of a neck: forward(map (B, C_in, H, W)) -> (B, out_channels, H, W)."""

    in_channels: int
    out_channels: int

    def check_input(self, feature_map: Tensor) -> None:
        """Raise a clear error for a map the neck cannot take."""
        if feature_map.ndim != 4 or feature_map.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} expects a map (B, {self.in_channels}, H, W), "
                f"got shape {tuple(feature_map.shape)}"
            )


class NeckConfig(Component):
    """Base of every neck config."""

    restore_stride: int | None = Field(
        None,
        ge=1,
        description="bilinearly resize the pooled map to this stride (of the input) before pooling and the heads: "
        "the neck output, or with `name: none` the backbone's final map; null = keep its size",
    )


NECKS: Registry[NeckConfig] = Registry("neck", NeckConfig)


class NoNeckConfig(NeckConfig):
    """No neck: the heads read the backbone's pooled vector (its final map's average with `restore_stride`)."""

    name: Literal["none"]


@NECKS.register(NoNeckConfig)
def build_no_neck(config: NoNeckConfig, backbone: Backbone) -> None:
    return None


def build_neck(config: NeckConfig, backbone: Backbone) -> Neck | None:
    """The neck a config names, sized for `backbone`'s final map; None for `name: none`."""
    return NECKS.build(config, backbone)

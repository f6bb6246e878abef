"""The Backbone API every backbone implements (DESIGN.md, "Contracts").

For an image batch (B, C, H, W) a backbone returns `Features`:
  pooled (B, D)               CLS token or global-average of the last map
  maps   [(B, D_i, H_i, W_i)] dense maps, finest first, with `strides[i]` = H / H_i
  tokens (B, N, D) | None     patch tokens (without CLS / register tokens) where the model has them
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import Field
from torch import Tensor, nn

from pretrainlab.config.component import Component
from pretrainlab.registry import Registry


@dataclass
class Features:
    pooled: Tensor  # (B, D)
    maps: list[Tensor]  # [(B, D_i, H_i, W_i)], finest first
    tokens: Tensor | None = None  # (B, N, D)


class Backbone(nn.Module, abc.ABC):
    """Base class: subclasses set the attributes below in `__init__` and implement `forward`.

    Attributes:
        embed_dim: D of `Features.pooled`.
        out_channels: D_i of each entry of `Features.maps`.
        strides: H / H_i of each entry of `Features.maps`.
        patch_size: patch size for ViTs, None for CNNs.
        in_chans: number of input channels (1, 3 or 4).
        final_map_index: index into `maps` of the map a neck reads (default -1, the last one;
            SEBNet: its 1/64 context map).
        decoder_width: embedding dim of the SegFormer decoder that goes with this backbone (MiT), else None.
    """

    embed_dim: int
    out_channels: list[int]
    strides: list[int]
    patch_size: int | None
    in_chans: int
    final_map_index: int = -1
    decoder_width: int | None = None

    @abc.abstractmethod
    def forward(self, images: Tensor) -> Features:  # images (B, C, H, W)
        ...

    def check_input(self, images: Tensor) -> None:
        """Raise a clear error for a batch the backbone cannot take."""
        if images.ndim != 4:
            raise ValueError(f"{type(self).__name__} expects images (B, C, H, W), got shape {tuple(images.shape)}")
        if images.shape[1] != self.in_chans:
            raise ValueError(
                f"{type(self).__name__} was built for {self.in_chans} input channels, "
                f"got {images.shape[1]} (shape {tuple(images.shape)})"
            )


def global_average(feature_map: Tensor) -> Tensor:
    """(B, D, H, W) -> (B, D)."""
    return torch.flatten(nn.functional.adaptive_avg_pool2d(feature_map, 1), 1)


class BackboneConfig(Component):
    """Base of every backbone config: the input channels and an optional checkpoint to load."""

    in_chans: int | None = Field(None, ge=1, description="input channels; null = data.channels")
    checkpoint: Path | None = Field(None, description="weights loaded after building, with a key report")

    def describe(self) -> str:
        """What was built, in a few words (reports and score tables)."""
        return self.name


BACKBONES: Registry[BackboneConfig] = Registry("backbone", BackboneConfig)


def build_backbone(config: BackboneConfig, in_chans: int = 3) -> Backbone:
    """The backbone `config` names, taking `config.in_chans` channels (else `in_chans`), with
    `config.checkpoint` loaded (and its missing / unexpected / mismatched keys reported)."""
    backbone = BACKBONES.build(config, config.in_chans or in_chans)
    if config.checkpoint is not None:
        from pretrainlab.models.checkpoint import load_backbone_checkpoint

        load_backbone_checkpoint(backbone, config.checkpoint)
    return backbone

"""The Backbone API every backbone implements (DESIGN.md, "Contracts").

For an image batch (B, C, H, W) a backbone returns `Features`:
  pooled (B, D)               CLS token or global-average of the last map
  maps   [(B, D_i, H_i, W_i)] dense maps, finest first, with `strides[i]` = H / H_i
  tokens (B, N, D) | None     patch tokens (without CLS / register tokens) where the model has them

With `channel_adapter: learned` (set from `data.channel_policy: learned`), `build_backbone`
returns a `ChannelAdaptedBackbone`: single-channel images go through a learned 1x1
convolution (1 -> 3, initialised to copy the channel) into a 3-channel network, which
`checkpoint` fills (e.g. RGB-pretrained weights). The wrapper takes 1 channel (`in_chans`)
and has the network's `Features`, `out_channels` and `strides`; its parameters are
`channel_adapter.*` (not a PEFT adapter of `models/adapters.py`) and `network.*`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field, FilePath
from torch import Tensor, nn

from pretrainlab.config.component import Component
from pretrainlab.models.layers.channel_adapter import ChannelAdapter
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
    checkpoint: FilePath | None = Field(None, description="weights loaded after building, with a key report "
                                        "(an existing file: checked at load)")
    channel_adapter: Literal["none", "learned"] = Field("none", description=(
        "learned: 1 input channel through a learned 1x1 conv into a 3-channel network; set by "
        "data.channel_policy learned"))  # fmt: skip

    def describe(self) -> str:
        """What was built, in a few words (reports and score tables)."""
        return self.name


BACKBONES: Registry[BackboneConfig] = Registry("backbone", BackboneConfig)


class ChannelAdaptedBackbone(Backbone):
    """`network` (built for C channels) fed single-channel images through a learned 1x1 convolution:
    (B, 1, H, W) -> channel_adapter -> (B, C, H, W) -> network -> `Features`.

    Args:
        network: any backbone; its `in_chans` is the adapter's output channel count.
    """

    def __init__(self, network: Backbone) -> None:
        super().__init__()
        self.channel_adapter = ChannelAdapter(network.in_chans)
        self.network = network
        self.in_chans = 1
        self.embed_dim = network.embed_dim
        self.out_channels = list(network.out_channels)
        self.strides = list(network.strides)
        self.patch_size = network.patch_size
        self.final_map_index = network.final_map_index
        self.decoder_width = network.decoder_width

    def forward(self, images: Tensor) -> Features:  # images (B, 1, H, W)
        self.check_input(images)
        return self.network(self.channel_adapter(images))  # (B, 1, H, W) -> (B, C, H, W) -> Features


LEARNED_NETWORK_CHANS = 3  # the learned channel adapter feeds an RGB-shaped network (RGB-pretrained weights fit)


def build_backbone(config: BackboneConfig, in_chans: int = 3) -> Backbone:
    """The backbone `config` names, taking `config.in_chans` channels (else `in_chans`), with
    `config.checkpoint` loaded (and its missing / unexpected / mismatched keys reported).

    With `config.channel_adapter == "learned"` the input must be 1 channel: the network is built for 3,
    the checkpoint goes into it, and it is wrapped in a `ChannelAdaptedBackbone` taking the 1 channel.
    """
    in_chans = config.in_chans or in_chans
    learned = config.channel_adapter == "learned"
    if learned and in_chans != 1:
        raise ValueError(f"backbone.channel_adapter learned maps 1 input channel to {LEARNED_NETWORK_CHANS}; "
                         f"got {in_chans} input channels (data.channels must be 1)")  # fmt: skip
    backbone = BACKBONES.build(config, LEARNED_NETWORK_CHANS if learned else in_chans)
    if config.checkpoint is not None:
        from pretrainlab.models.checkpoint import load_backbone_checkpoint

        load_backbone_checkpoint(backbone, config.checkpoint)
    return ChannelAdaptedBackbone(backbone) if learned else backbone

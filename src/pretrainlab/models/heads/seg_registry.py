"""Segmentation heads by the name users type (`eval.seg.head.name`).

`build_seg_head(config, out_channels, strides, num_classes)` builds the head a typed
config names; an unknown name fails with the known names and a did-you-mean.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pretrainlab.config.schema import (
    SegFormerHeadConfig,
    SegHeadConfig,
    SegLinearHeadConfig,
    SegmenterHeadConfig,
    UperHeadConfig,
)
from pretrainlab.models.heads.seg_base import SegHead
from pretrainlab.models.heads.seg_linear import SegLinearHead
from pretrainlab.models.heads.seg_segformer import SegFormerHead
from pretrainlab.models.heads.seg_segmenter import SegmenterHead
from pretrainlab.models.heads.seg_uper import UperHead
from pretrainlab.registry import Registry

SegHeadBuilder = Callable[..., SegHead]
SEG_HEADS: Registry[SegHeadBuilder] = Registry("segmentation head")


@SEG_HEADS.register("seg_linear")
def build_seg_linear(config: SegLinearHeadConfig, channels: Sequence[int], strides: Sequence[int], k: int) -> SegHead:
    return SegLinearHead(channels, strides, k, num_maps=config.num_maps, dropout=config.dropout)


@SEG_HEADS.register("segformer")
def build_segformer(config: SegFormerHeadConfig, channels: Sequence[int], strides: Sequence[int], k: int) -> SegHead:
    return SegFormerHead(channels, strides, k, embed_dim=config.embed_dim, dropout=config.dropout)


@SEG_HEADS.register("segmenter")
def build_segmenter(config: SegmenterHeadConfig, channels: Sequence[int], strides: Sequence[int], k: int) -> SegHead:
    return SegmenterHead(
        channels,
        strides,
        k,
        embed_dim=config.embed_dim,
        depth=config.depth,
        num_heads=config.num_heads,
        mlp_ratio=config.mlp_ratio,
        dropout=config.dropout,
    )


@SEG_HEADS.register("uper")
def build_uper(config: UperHeadConfig, channels: Sequence[int], strides: Sequence[int], k: int) -> SegHead:
    return UperHead(channels, strides, k, channels=config.channels, pool_scales=config.pool_scales, dropout=config.dropout)


def build_seg_head(
    config: SegHeadConfig, out_channels: Sequence[int], strides: Sequence[int], num_classes: int
) -> SegHead:
    """The head `config.name` names, for a backbone with these maps, predicting `num_classes`."""
    return SEG_HEADS.get(config.name)(config, out_channels, strides, num_classes)

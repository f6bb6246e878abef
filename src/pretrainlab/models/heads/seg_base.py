"""Base API of the semantic-segmentation heads (DESIGN.md, W5).

A head is built from the backbone's `out_channels` and `strides` (Backbone API) and maps
the list of dense maps `[(B, D_i, H_i, W_i)]` (finest first) to class logits
(B, K, H / s, W / s) at its `output_stride` s; the segmentor resizes them to the input.
Its training objective is `loss(maps, labels)`: per-pixel cross-entropy of those logits by
default; a head with its own objective (Mask2Former's set prediction) overrides it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from pretrainlab.config.component import Component
from pretrainlab.losses.cross_entropy import segmentation_cross_entropy
from pretrainlab.registry import Registry


def resize_to(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear (align_corners=False) resize of (B, C, h, w) to `size` = (H, W); no-op when equal."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def logits_cross_entropy(logits: Tensor, labels: Tensor, *, avg_non_ignore: bool) -> Tensor:
    """Cross-entropy (ignore 255, in fp32) of logits (B, K, h, w) resized (bilinear) to labels (B, H, W)."""
    return segmentation_cross_entropy(resize_to(logits, labels.shape[-2:]).float(), labels,
                                      avg_non_ignore=avg_non_ignore)  # fmt: skip


class SegHead(nn.Module):
    """Subclasses set `output_stride` (and `map_indices` when they read only some maps) and
    implement `forward(maps)`."""

    num_classes: int
    output_stride: int
    in_channels: list[int]
    map_indices: list[int]  # the maps `forward` reads (the others may be empty placeholders)

    def __init__(self, in_channels: Sequence[int], strides: Sequence[int], num_classes: int) -> None:
        super().__init__()
        if not in_channels or len(in_channels) != len(strides):
            raise ValueError(
                f"{type(self).__name__} needs one stride per map, got out_channels={list(in_channels)} "
                f"and strides={list(strides)}"
            )
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.in_channels = list(in_channels)
        self.num_classes = num_classes
        self.map_indices = list(range(len(in_channels)))

    def check_maps(self, maps: Sequence[Tensor]) -> None:
        """Raise a clear error when `maps` do not have the channels the head was built for."""
        channels = [m.shape[1] if m.ndim == 4 else None for m in maps]
        if channels != self.in_channels:
            shapes = [tuple(m.shape) for m in maps]
            raise ValueError(f"{type(self).__name__} was built for maps with channels {self.in_channels}, got {shapes}")

    def loss(self, maps: Sequence[Tensor], labels: Tensor, *, avg_non_ignore: bool) -> dict[str, Tensor]:
        """`{"loss": cross-entropy}` of the logits resized (bilinear) to labels (B, H, W), ignore index 255."""
        return {"loss": logits_cross_entropy(self(maps), labels, avg_non_ignore=avg_non_ignore)}


class SegHeadConfig(Component):
    """Base of every segmentation-head config."""

    outputs_logits: ClassVar[bool] = True  # the head's output is class logits (what a softmax / entropy may read)


SEG_HEADS: Registry[SegHeadConfig] = Registry("segmentation head", SegHeadConfig)


def build_seg_head(
    config: SegHeadConfig,
    out_channels: Sequence[int],
    strides: Sequence[int],
    num_classes: int,
    *,
    decoder_width: int | None = None,
) -> SegHead:
    """The head `config.name` names, for a backbone with these maps, predicting `num_classes`.

    `decoder_width` is the backbone's preferred decoder width (`Backbone.decoder_width`, e.g.
    MiT's), used by heads whose config leaves their width unset; None = the head's default.
    Every registered builder takes it as a keyword (most ignore it).
    """
    return SEG_HEADS.build(config, out_channels, strides, num_classes, decoder_width=decoder_width)

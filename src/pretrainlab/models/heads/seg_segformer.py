"""SegFormer's all-MLP decoder (Xie et al. 2021, arXiv:2105.15203, Sec. 3.2), as NVlabs
SegFormer's `SegFormerHead` (mmseg 0.x, `decode_heads/segformer_head.py`; DAFormer ships
the same file), so the official decoders load into it.

Per map c_i (c1 finest, stride 4 on MiT): a linear layer on its flattened tokens to width E
(`linear_c{i}.proj`), bilinear resize (align_corners=False) to c1's size; concatenation
coarsest first [c4, c3, c2, c1]; `linear_fuse` = 1×1 conv (no bias) + BN + ReLU to E;
Dropout2d; `linear_pred` = 1×1 conv with bias to K classes. E defaults to the backbone's
`decoder_width` (MiT: 256 for B0/B1, 768 for B2–B5), else 256. Over n ≠ 4 maps (a plain ViT's
single map) the same rule applies: `linear_c1` … `linear_c{n}`, coarsest first.

Parameter names equal the official keys minus their `decode_head.` prefix, except that
official checkpoints also hold `decode_head.conv_seg.{weight,bias}`: mmseg 0.x's
`BaseDecodeHead` builds that classifier, but SegFormerHead never calls it. It has no
counterpart here; drop it before a strict `load_state_dict`.

Differences from MMSeg 1.x's `SegformerHead`: there each map is projected by a 1×1 conv +
BN + ReLU (`convs.{i}`; here a linear layer with bias and no norm or activation), the maps
are concatenated finest first, the fusion is `fusion_conv` and the classifier `conv_seg`;
its weights do not load here, nor these there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from pretrainlab.models.heads.seg_base import SEG_HEADS, SegHead, SegHeadConfig, resize_to
from pretrainlab.models.layers.conv_bn_act import ConvBnAct

DEFAULT_EMBED_DIM = 256  # NVlabs' width for MiT-B0/B1, used when the backbone names none


class SegFormerMLP(nn.Module):
    """A linear layer on every cell: (B, C, H, W) -> (B, E, H, W), weights in `proj` as NVlabs' `MLP`."""

    def __init__(self, in_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_channels, embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        B, _, H, W = x.shape
        tokens = self.proj(x.flatten(2).transpose(1, 2))  # (B, H * W, E)
        return tokens.transpose(1, 2).reshape(B, -1, H, W)  # (B, E, H, W)


class SegFormerHead(SegHead):
    """(maps [(B, D_i, H_i, W_i)], finest first) -> logits (B, K, H_0, W_0).

    Submodules `linear_c1` … `linear_c{n}` (one per map, c1 the finest), `linear_fuse`,
    `dropout`, `linear_pred`: NVlabs' names, so its `decode_head.*` weights load.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        strides: Sequence[int],
        num_classes: int,
        *,
        embed_dim: int = DEFAULT_EMBED_DIM,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(in_channels, strides, num_classes)
        if min(strides) != strides[0]:
            raise ValueError(f"SegFormerHead needs the finest map first, got strides={list(strides)}")
        self.output_stride = strides[0]
        self.embed_dim = embed_dim
        for i, channels in enumerate(in_channels, start=1):
            self.add_module(f"linear_c{i}", SegFormerMLP(channels, embed_dim))
        self.linear_fuse = ConvBnAct(embed_dim * len(in_channels), embed_dim, kernel_size=1)
        # mmcv's ConvModule initialises its conv as He et al. (fan_out, ReLU); BN starts at (1, 0)
        nn.init.kaiming_normal_(self.linear_fuse.conv.weight, mode="fan_out", nonlinearity="relu")
        self.dropout = nn.Dropout2d(dropout)
        self.linear_pred = nn.Conv2d(embed_dim, num_classes, kernel_size=1)

    def projections(self) -> list[SegFormerMLP]:
        """`linear_c1` … `linear_c{n}`, finest map first."""
        return [getattr(self, f"linear_c{i}") for i in range(1, len(self.in_channels) + 1)]

    def forward(self, maps: Sequence[Tensor]) -> Tensor:
        self.check_maps(maps)
        size = maps[0].shape[-2:]
        projected = [resize_to(project(m), size) for project, m in zip(self.projections(), maps)]  # [(B, E, H_0, W_0)]
        fused = self.linear_fuse(torch.cat(projected[::-1], dim=1))  # coarsest first, as NVlabs: (B, E, H_0, W_0)
        return self.linear_pred(self.dropout(fused))  # (B, K, H_0, W_0)


class SegFormerHeadConfig(SegHeadConfig):
    """SegFormer all-MLP decoder over all maps (NVlabs SegFormer)."""

    name: Literal["segformer"]
    embed_dim: int | None = Field(
        None, ge=1, description="null = the backbone's decoder_width (MiT: 256 for B0/B1, 768 for B2-B5), else 256"
    )
    dropout: float = Field(0.1, ge=0.0, lt=1.0)


@SEG_HEADS.register(SegFormerHeadConfig)
def build_segformer(
    config: SegFormerHeadConfig,
    channels: Sequence[int],
    strides: Sequence[int],
    num_classes: int,
    *,
    decoder_width: int | None = None,
) -> SegFormerHead:
    embed_dim = config.embed_dim or decoder_width or DEFAULT_EMBED_DIM
    return SegFormerHead(channels, strides, num_classes, embed_dim=embed_dim, dropout=config.dropout)

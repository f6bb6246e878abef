"""MiT (Mix Transformer) B0-B5, SegFormer's encoder, as timm's PyramidVisionTransformerV2.

Xie et al. 2021, "SegFormer: Simple and Efficient Design for Semantic Segmentation with
Transformers". timm's PVTv2 (Wang et al. 2022) is the same network layer for layer as the
NVlabs `mit_b*` classes (SegFormer's mmseg/models/backbones/mix_transformer.py) once it is
configured as they are:

  - overlapping patch embeddings: a 7x7 stride-4 conv (padding 3) before stage 1, a 3x3
    stride-2 conv (padding 1) before stages 2-4, each followed by LayerNorm (eps 1e-5);
  - efficient self-attention, q and kv with bias, keys / values spatially reduced by a
    strided conv + LayerNorm (eps 1e-5) with ratios 8, 4, 2, 1;
  - Mix-FFN fc1 -> 3x3 depth-wise conv -> GELU -> fc2 with hidden ratio 4 in *every* stage
    (timm's pvt_v2_b0-b4 presets use 8, 8, 4, 4: those are PVTv2, not MiT);
  - pre-norm blocks and a LayerNorm closing each stage, all with eps 1e-6 (set explicitly
    here; timm's default LayerNorm happens to use 1e-6 too);
  - stochastic depth rising linearly from 0 to `drop_path_rate` (0.1) over all blocks
    (timm's `calculate_drop_path_rates(rate, depths, stagewise=True)` is NVlabs'
    `linspace(0, rate, sum(depths))` split by stage).

    variant  widths (= out_channels)  depths         decoder width  parameters  (paper "Encoder Params")
    b0       32, 64, 160, 256         2, 2, 2, 2     256             3,319,392  (3.4 M)
    b1       64, 128, 320, 512        2, 2, 2, 2     256            13,151,424  (13.1 M)
    b2       64, 128, 320, 512        3, 4, 6, 3     768            24,196,288  (24.2 M)
    b3       64, 128, 320, 512        3, 4, 18, 3    768            44,072,128  (44.0 M)
    b4       64, 128, 320, 512        3, 8, 27, 3    768            60,842,688  (60.8 M)
    b5       64, 128, 320, 512        3, 6, 40, 3    768            81,443,008  (81.4 M)

Heads 1, 2, 5, 8 in every variant. The parameter counts (in_chans 3, no classifier) are
identical to NVlabs' MixVisionTransformer; the paper's Table 1 rounds them to within 0.1 M.
The decoder width is the embedding dim of SegFormer's all-MLP decoder for that variant
(NVlabs' configs: `decoder_params=dict(embed_dim=256)` for B0 / B1, 768 for B2-B5).

`Features`:
    maps    [(B, w_1, H/4, W/4), (B, w_2, H/8, W/8), (B, w_3, H/16, W/16), (B, w_4, H/32, W/32)],
            each after its stage's closing LayerNorm (NVlabs' four outputs); the sizes are the
            ceil of the strided convs, e.g. 17x17 at stride 4 for a 65x65 image.
    pooled  global average of the last map, (B, w_4).
    tokens  None.

Official checkpoints (NVlabs `mit_b*.pth` ImageNet weights, flat, with a `head.*`
classifier; `segformer.b*.*.pth` with `backbone.*` / `decode_head.*` under `state_dict`)
use NVlabs' names; `nvlabs_to_timm` maps them, and `load_backbone_checkpoint` finds them
through `MiTBackbone.rename_checkpoint_key` (its prefix and ignore rules drop `backbone.`,
`decode_head.*` and `head.*`):

    patch_embed1.*                   -> patch_embed.*
    patch_embed{s}.*  (s = 2, 3, 4)  -> stages.{s-1}.downsample.*
    block{s}.{j}.*                   -> stages.{s-1}.blocks.{j}.*
      with .mlp.dwconv.dwconv.*      -> .mlp.dwconv.*
    norm{s}.*                        -> stages.{s-1}.norm.*
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Literal, TypeVar

from pydantic import Field
from timm.models.pvt_v2 import PyramidVisionTransformerV2
from torch import Tensor, nn

from pretrainlab.models.backbones.base import BACKBONES, Backbone, BackboneConfig, Features, global_average
from pretrainlab.registry import did_you_mean

MiTVariantName = Literal["b0", "b1", "b2", "b3", "b4", "b5"]
MIT_NUM_HEADS = (1, 2, 5, 8)
MIT_SR_RATIOS = (8, 4, 2, 1)
MIT_MLP_RATIO = 4.0
MIT_STRIDES = [4, 8, 16, 32]
BLOCK_NORM_EPS = 1e-6  # NVlabs: norm_layer=partial(nn.LayerNorm, eps=1e-6) in the blocks and stage ends


@dataclass(frozen=True)
class MiTVariant:
    """Widths and depths of the four stages, and the SegFormer decoder width that goes with them."""

    widths: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    decoder_width: int


_NARROW = (32, 64, 160, 256)
_WIDE = (64, 128, 320, 512)
MIT_VARIANTS: dict[str, MiTVariant] = {
    "b0": MiTVariant(widths=_NARROW, depths=(2, 2, 2, 2), decoder_width=256),
    "b1": MiTVariant(widths=_WIDE, depths=(2, 2, 2, 2), decoder_width=256),
    "b2": MiTVariant(widths=_WIDE, depths=(3, 4, 6, 3), decoder_width=768),
    "b3": MiTVariant(widths=_WIDE, depths=(3, 4, 18, 3), decoder_width=768),
    "b4": MiTVariant(widths=_WIDE, depths=(3, 8, 27, 3), decoder_width=768),
    "b5": MiTVariant(widths=_WIDE, depths=(3, 6, 40, 3), decoder_width=768),
}

_NVLABS_RENAMES: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...] = (
    (re.compile(r"^patch_embed1\."), "patch_embed."),
    (re.compile(r"^patch_embed([234])\."), lambda m: f"stages.{int(m[1]) - 1}.downsample."),
    (re.compile(r"^block([1-4])\.(\d+)\."), lambda m: f"stages.{int(m[1]) - 1}.blocks.{m[2]}."),
    (re.compile(r"\.mlp\.dwconv\.dwconv\."), ".mlp.dwconv."),  # NVlabs wraps the conv in a DWConv module
    (re.compile(r"^norm([1-4])\."), lambda m: f"stages.{int(m[1]) - 1}.norm."),  # after block*: no clash
)

V = TypeVar("V")


def nvlabs_key_to_timm(key: str) -> str:
    """timm's PVTv2 name of an NVlabs MiT weight name (`block2.0.attn.q.weight` ->
    `stages.1.blocks.0.attn.q.weight`); other names (e.g. `head.weight`) are returned unchanged."""
    for pattern, replacement in _NVLABS_RENAMES:
        key = pattern.sub(replacement, key, count=1)
    return key


def nvlabs_to_timm(state: dict[str, V]) -> dict[str, V]:
    """An NVlabs MiT state dict (no `backbone.` prefix) with timm's PVTv2 names; see the module docstring."""
    return {nvlabs_key_to_timm(key): value for key, value in state.items()}


class MiTBackboneConfig(BackboneConfig):
    """SegFormer's Mix Transformer encoder, B0-B5 (timm's PVTv2 configured as MiT)."""

    name: Literal["mit"]
    variant: MiTVariantName = "b0"
    drop_path_rate: float = Field(0.1, ge=0.0, lt=1.0, description="stochastic depth of the last block")

    def describe(self) -> str:
        return f"MiT-{self.variant.upper()}"


@BACKBONES.register(MiTBackboneConfig)
def build_mit(config: MiTBackboneConfig, in_chans: int) -> MiTBackbone:
    return MiTBackbone(config.variant, in_chans=in_chans, drop_path_rate=config.drop_path_rate)


class MiTBackbone(Backbone):
    """MiT-B0..B5 with the Backbone API; the timm model is `self.model` (keys `model.<timm key>`).

    Attributes (besides the Backbone ones): `variant`, and `decoder_width`, the SegFormer
    decoder embedding dim for this variant (256 for B0 / B1, 768 for B2-B5).
    """

    def __init__(self, variant: MiTVariantName = "b0", *, in_chans: int = 3, drop_path_rate: float = 0.1) -> None:
        super().__init__()
        if variant not in MIT_VARIANTS:
            known = list(MIT_VARIANTS)
            raise ValueError(f"unknown MiT variant {variant!r}{did_you_mean(str(variant), known)} known: {known}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate={drop_path_rate} is not in [0, 1)")
        spec = MIT_VARIANTS[variant]
        self.model = PyramidVisionTransformerV2(
            in_chans=in_chans,
            num_classes=0,
            depths=spec.depths,
            embed_dims=spec.widths,
            num_heads=MIT_NUM_HEADS,
            sr_ratios=MIT_SR_RATIOS,
            mlp_ratios=(MIT_MLP_RATIO,) * 4,
            qkv_bias=True,
            drop_path_rate=drop_path_rate,
            norm_layer=partial(nn.LayerNorm, eps=BLOCK_NORM_EPS),
        )
        self.variant = variant
        self.in_chans = in_chans
        self.embed_dim = spec.widths[-1]
        self.out_channels = list(spec.widths)
        self.strides = list(MIT_STRIDES)
        self.patch_size = None  # overlapping patch embeddings, no fixed token grid
        self.decoder_width = spec.decoder_width

    def forward(self, images: Tensor) -> Features:  # images (B, C, H, W)
        self.check_input(images)
        _, maps = self.model.forward_intermediates(images)  # 4 x (B, w_i, H / s_i, W / s_i)
        return Features(pooled=global_average(maps[-1]), maps=list(maps))  # pooled (B, w_4)

    @staticmethod
    def rename_checkpoint_key(key: str) -> str:
        """Hook of `load_backbone_checkpoint`: the name in `self.model` of an NVlabs checkpoint key."""
        return nvlabs_key_to_timm(key)

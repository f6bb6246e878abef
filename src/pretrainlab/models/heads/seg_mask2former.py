"""Mask2Former head for semantic segmentation (Cheng et al. 2022, "Masked-attention Mask Transformer
for Universal Image Segmentation", arXiv:2112.01527), in plain PyTorch: no compiled op, the same
code on CPU and GPU.

    maps ─► pixel decoder ─► 3 levels (coarsest first) + mask features (B, D, H_0, W_0)
    learned queries (features + position embeddings) ─► L decoder layers, round-robin over the levels,
        each: masked cross-attention (inside the previous mask) → self-attention → FFN
    before the first layer and after every layer: class logits (B, Q, C+1) and mask logits
        (B, Q, H_0, W_0) = mask-embedding MLP(queries) · mask features — all supervised (`loss`)

Semantic inference (`forward`): softmax(class)[..., :C] × sigmoid(mask), summed over queries ->
(B, C, H_0, W_0) scores, at the finest map's stride. The segmentor resizes these scores to the
image; the official code resizes the mask logits before the sigmoid, which differs only near
mask edges. Training uses `loss(maps, labels)`, the set-prediction loss of
`losses/mask2former.py`, not a per-pixel cross-entropy of these scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from pretrainlab.losses.mask2former import Mask2FormerLoss, Mask2FormerLossWeights, semantic_targets
from pretrainlab.models.heads.seg_base import SEG_HEADS, SegHead, SegHeadConfig
from pretrainlab.models.heads.seg_mask2former_pixel import (
    NUM_LEVELS,
    FPNPixelDecoder,
    MSDeformPixelDecoder,
    sine_position_embedding,
)
from pretrainlab.models.layers.masked_attention import MaskedAttentionDecoderLayer, masked_attention_mask

IGNORE_INDEX = 255


class MaskedTransformerDecoder(nn.Module):
    """(levels [(B, D, h_l, w_l)] coarsest first, mask features (B, D, H, W)) ->
    per prediction (L + 1 of them): class logits (B, Q, C+1), mask logits (B, Q, H, W)."""

    def __init__(
        self, num_classes: int, dim: int, *, num_queries: int, num_layers: int, num_heads: int, ffn_dim: int,
    ) -> None:  # fmt: skip
        super().__init__()
        self.num_heads = num_heads
        self.query_features = nn.Embedding(num_queries, dim)
        self.query_pos = nn.Embedding(num_queries, dim)
        self.level_embed = nn.Embedding(NUM_LEVELS, dim)
        self.layers = nn.ModuleList(
            MaskedAttentionDecoderLayer(dim, num_heads=num_heads, ffn_dim=ffn_dim) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.class_embed = nn.Linear(dim, num_classes + 1)
        self.mask_embed = nn.Sequential(  # a 3-layer MLP, as the paper's mask embedding
            nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim)
        )

    def predict(self, queries: Tensor, mask_features: Tensor) -> tuple[Tensor, Tensor]:
        """Shared prediction heads: (class logits (B, Q, C+1), mask logits (B, Q, H, W))."""
        queries = self.norm(queries)
        masks = torch.einsum("bqd,bdhw->bqhw", self.mask_embed(queries), mask_features)
        return self.class_embed(queries), masks

    def forward(self, levels: Sequence[Tensor], mask_features: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        B = mask_features.shape[0]
        memories, memory_pos = [], []
        for level, x in enumerate(levels):
            D, h, w = x.shape[1:]
            memories.append(x.flatten(2).transpose(1, 2) + self.level_embed.weight[level])  # (B, h·w, D)
            pos = sine_position_embedding(h, w, D, device=x.device, dtype=x.dtype)
            memory_pos.append(pos.flatten(1).T[None].expand(B, -1, -1))  # (B, h·w, D)
        queries = self.query_features.weight[None].expand(B, -1, -1)  # (B, Q, D)
        query_pos = self.query_pos.weight[None].expand(B, -1, -1)
        class_logits, mask_logits = self.predict(queries, mask_features)
        all_classes, all_masks = [class_logits], [mask_logits]
        for i, layer in enumerate(self.layers):
            level = i % NUM_LEVELS  # round-robin, coarsest first
            attn_mask = masked_attention_mask(mask_logits, tuple(levels[level].shape[-2:]), self.num_heads)
            queries = layer(queries, query_pos, memories[level], memory_pos[level], attn_mask)
            class_logits, mask_logits = self.predict(queries, mask_features)
            all_classes.append(class_logits)
            all_masks.append(mask_logits)
        return all_classes, all_masks


class Mask2FormerHead(SegHead):
    """(maps [(B, D_i, H_i, W_i)], finest first) -> semantic scores (B, C, H_0, W_0) in [0, Q]."""

    def __init__(
        self,
        in_channels: Sequence[int],
        strides: Sequence[int],
        num_classes: int,
        *,
        num_queries: int = 100,
        hidden_dim: int = 256,
        num_layers: int = 9,
        num_heads: int = 8,
        ffn_dim: int = 2048,
        pixel_decoder: Literal["msdeform", "fpn"] = "msdeform",
        num_encoder_layers: int = 6,
        loss: Mask2FormerLoss | None = None,
    ) -> None:
        super().__init__(in_channels, strides, num_classes)
        self.output_stride = strides[0]
        if pixel_decoder == "msdeform":
            self.pixel_decoder: nn.Module = MSDeformPixelDecoder(
                in_channels, hidden_dim, num_layers=num_encoder_layers, num_heads=num_heads, ffn_dim=ffn_dim // 2
            )
        elif pixel_decoder == "fpn":
            self.pixel_decoder = FPNPixelDecoder(in_channels, hidden_dim)
        else:
            raise ValueError(f"unknown pixel_decoder '{pixel_decoder}'; known: fpn, msdeform")
        self.decoder = MaskedTransformerDecoder(
            num_classes, hidden_dim, num_queries=num_queries, num_layers=num_layers, num_heads=num_heads, ffn_dim=ffn_dim
        )
        self.criterion = loss if loss is not None else Mask2FormerLoss(num_classes)

    def predictions(self, maps: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Every layer's (class logits (B, Q, C+1)), (mask logits (B, Q, H_0, W_0)), first to last."""
        self.check_maps(maps)
        levels, mask_features = self.pixel_decoder(maps)
        return self.decoder(levels, mask_features)

    @staticmethod
    def semantic_scores(class_logits: Tensor, mask_logits: Tensor) -> Tensor:
        """softmax(class)[..., :C] × sigmoid(mask), summed over queries: (B, Q, C+1), (B, Q, H, W) -> (B, C, H, W)."""
        probs = class_logits.float().softmax(-1)[..., :-1]
        return torch.einsum("bqc,bqhw->bchw", probs, mask_logits.float().sigmoid())

    def forward(self, maps: Sequence[Tensor]) -> Tensor:
        class_logits, mask_logits = self.predictions(maps)
        return self.semantic_scores(class_logits[-1], mask_logits[-1])

    def loss(self, maps: Sequence[Tensor], labels: Tensor, *, avg_non_ignore: bool) -> dict[str, Tensor]:
        """Set-prediction loss of every layer against labels (B, H, W) (ignore 255); `avg_non_ignore`
        concerns per-pixel cross-entropy only and is unused here."""
        class_logits, mask_logits = self.predictions(maps)
        return self.criterion(class_logits, mask_logits, semantic_targets(labels, self.num_classes, IGNORE_INDEX))


class Mask2FormerHeadConfig(SegHeadConfig):
    """Mask2Former: pixel decoder + masked-attention transformer decoder, set-prediction loss."""

    name: Literal["mask2former"]
    outputs_logits: ClassVar[bool] = False  # summed mask probabilities: argmax is right, a softmax is not
    num_queries: int = Field(100, ge=1)
    hidden_dim: int = Field(256, ge=8, multiple_of=8, description="queries, pixel decoder and mask embeddings")
    num_layers: int = Field(9, ge=1, description="masked-attention decoder layers (round-robin over 3 levels)")
    num_heads: int = Field(8, ge=1)
    ffn_dim: int = Field(2048, ge=1, description="decoder FFN width; the deformable encoder uses half")
    pixel_decoder: Literal["msdeform", "fpn"] = "msdeform"
    num_encoder_layers: int = Field(6, ge=0, description="deformable-attention encoder layers (msdeform)")
    num_points: int | None = Field(
        12544, ge=1, description="points per mask for matching and loss (112²); null = every pixel of the mask "
        "prediction, exact and cheaper when the masks have fewer pixels (a 64-px crop gives 16×16)"
    )
    oversample_ratio: float = Field(3.0, ge=1.0)
    importance_ratio: float = Field(0.75, ge=0.0, le=1.0)
    class_weight: float = Field(2.0, ge=0.0)
    mask_weight: float = Field(5.0, ge=0.0)
    dice_weight: float = Field(5.0, ge=0.0)
    no_object_weight: float = Field(0.1, ge=0.0)


@SEG_HEADS.register(Mask2FormerHeadConfig)
def build_mask2former(
    config: Mask2FormerHeadConfig,
    channels: Sequence[int],
    strides: Sequence[int],
    num_classes: int,
    *,
    decoder_width: int | None = None,  # unused: the width comes from the config
) -> Mask2FormerHead:
    if config.hidden_dim % config.num_heads:
        raise ValueError(f"hidden_dim={config.hidden_dim} must be divisible by num_heads={config.num_heads}")
    weights = Mask2FormerLossWeights(config.class_weight, config.mask_weight, config.dice_weight,
                                     config.no_object_weight)  # fmt: skip
    loss = Mask2FormerLoss(
        num_classes, weights=weights, num_points=config.num_points, oversample_ratio=config.oversample_ratio,
        importance_ratio=config.importance_ratio,
    )
    return Mask2FormerHead(
        channels, strides, num_classes, num_queries=config.num_queries, hidden_dim=config.hidden_dim,
        num_layers=config.num_layers, num_heads=config.num_heads, ffn_dim=config.ffn_dim,
        pixel_decoder=config.pixel_decoder, num_encoder_layers=config.num_encoder_layers, loss=loss,
    )  # fmt: skip

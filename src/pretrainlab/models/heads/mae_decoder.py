"""MAE's light transformer decoder (He et al. 2021, arXiv:2111.06377, Sec. 3).

The encoder's tokens (CLS first, then the encoded patches in shuffled order) are projected
to the decoder width, mask tokens fill the removed positions, `ids_restore` puts every
patch back in place, fixed 2-D sin-cos position embeddings (with the CLS slot) are added,
and a few transformer blocks predict each patch's p·p·C pixel values. The CLS output is dropped.

Parameter names map one to one onto the official release's `decoder_*` / `mask_token`
(`embed` <- `decoder_embed`, `pos_embed` <- `decoder_pos_embed`, `blocks` <- `decoder_blocks`,
`norm` <- `decoder_norm`, `pred` <- `decoder_pred`), see `methods/mae_checkpoint.py`.
"""

from __future__ import annotations

from functools import partial
from typing import Literal

import torch
from pydantic import Field, model_validator
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from pretrainlab.config.component import Strict
from pretrainlab.models.layers.pos_embed import sincos_2d

# (width, depth, heads): the paper's decoder and lighter ones for CPU studies
DECODER_PRESETS: dict[str, tuple[int, int, int]] = {"paper": (512, 8, 16), "small": (256, 4, 8), "tiny": (128, 2, 4)}


class MAEDecoderConfig(Strict):
    """The decoder's width / depth / heads: a `preset` (`paper` 512 / 8 / 16, `small` 256 / 4 / 8,
    `tiny` 128 / 2 / 4), any of whose values an explicit field replaces."""

    preset: Literal["paper", "small", "tiny"] = "paper"
    embed_dim: int | None = Field(None, ge=4, description="decoder width (multiple of 4 and of num_heads)")
    depth: int | None = Field(None, ge=1)
    num_heads: int | None = Field(None, ge=1)
    mlp_ratio: float = Field(4.0, gt=0.0)

    @property
    def resolved(self) -> tuple[int, int, int]:
        """(embed_dim, depth, num_heads) after applying the explicit fields to the preset."""
        width, depth, heads = DECODER_PRESETS[self.preset]
        return self.embed_dim or width, self.depth or depth, self.num_heads or heads

    @model_validator(mode="after")
    def _check_width(self) -> MAEDecoderConfig:
        width, _, heads = self.resolved
        if width % heads or width % 4:
            raise ValueError(f"decoder embed_dim={width} must be a multiple of 4 and of num_heads={heads}")
        return self


class MAEDecoder(nn.Module):
    """(encoder tokens (B, 1 + K, D_enc), ids_restore (B, L)) -> pixel predictions (B, L, p·p·C_out)."""

    def __init__(
        self, encoder_dim: int, grid: tuple[int, int], patch_size: int, out_chans: int, config: MAEDecoderConfig
    ) -> None:
        super().__init__()
        width, depth, heads = config.resolved
        self.grid = grid
        self.embed = nn.Linear(encoder_dim, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(sincos_2d(width, grid, cls_token=True), requires_grad=False)  # (1, 1 + L, E)
        self.blocks = nn.ModuleList(
            Block(width, heads, config.mlp_ratio, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6))
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.pred = nn.Linear(width, patch_size * patch_size * out_chans)
        self.apply(init_mae_weights)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, tokens: Tensor, ids_restore: Tensor) -> Tensor:
        x = self.embed(tokens)  # (B, 1 + K, E)
        batch, _, width = x.shape
        num_patches = ids_restore.shape[1]
        fill = self.mask_token.expand(batch, num_patches + 1 - x.shape[1], width)  # (B, L - K, E)
        patches = torch.cat([x[:, 1:], fill], dim=1)  # shuffled order
        patches = torch.gather(patches, 1, ids_restore[:, :, None].expand(-1, -1, width))  # (B, L, E) patch order
        x = torch.cat([x[:, :1], patches], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.pred(self.norm(x))[:, 1:]  # (B, L, p·p·C_out)


def init_mae_weights(module: nn.Module) -> None:
    """MAE's init: Xavier-uniform linear weights (as the JAX ViT), zero biases, unit layer norms."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)

"""Masked attention and the transformer decoder layer of Mask2Former (Cheng et al. 2022,
arXiv:2112.01527, Sec. 3.2.1): each query cross-attends only to the pixels inside its mask
predicted by the previous layer (sigmoid > 0.5); a query whose mask is empty attends to every
pixel, as the official implementation does (otherwise its softmax would have no support).
The layer is cross-attention → self-attention → FFN, each with a residual and a post-LayerNorm.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def masked_attention_mask(mask_logits: Tensor, size: tuple[int, int], num_heads: int) -> Tensor:
    """The cross-attention mask from the previous layer's masks.

    Args:
        mask_logits: (B, Q, h, w) mask logits.
        size: (H, W) of the feature map the queries attend to.
        num_heads: M attention heads (the mask is repeated per head).

    Returns:
        (B · M, Q, H · W) bool, True where attention is NOT allowed (`nn.MultiheadAttention`
        convention); rows that would block every key are all False. No gradient.
    """
    resized = F.interpolate(mask_logits.detach().float(), size=size, mode="bilinear", align_corners=False)
    blocked = resized.flatten(2) < 0.0  # sigmoid < 0.5, (B, Q, H·W)
    blocked = blocked & ~blocked.all(-1, keepdim=True)  # an empty mask attends everywhere
    return blocked.repeat_interleave(num_heads, dim=0)  # (B·M, Q, H·W), batch-major like MHA


class MaskedAttentionDecoderLayer(nn.Module):
    """(queries (B, Q, D), query_pos (B, Q, D), memory (B, S, D), memory_pos (B, S, D),
    attn_mask (B·M, Q, S) bool or None) -> queries (B, Q, D)."""

    def __init__(self, dim: int, *, num_heads: int = 8, ffn_dim: int = 2048, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.cross_attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.self_attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim))
        self.norm_cross = nn.LayerNorm(dim)
        self.norm_self = nn.LayerNorm(dim)
        self.norm_ffn = nn.LayerNorm(dim)

    def cross_attention(
        self, queries: Tensor, query_pos: Tensor, memory: Tensor, memory_pos: Tensor, attn_mask: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """The masked cross-attention alone: (output (B, Q, D), weights (B, M, Q, S))."""
        output, weights = self.cross_attn(queries + query_pos, memory + memory_pos, memory, attn_mask=attn_mask,
                                          need_weights=True, average_attn_weights=False)  # fmt: skip
        return output, weights

    def forward(
        self, queries: Tensor, query_pos: Tensor, memory: Tensor, memory_pos: Tensor, attn_mask: Tensor | None
    ) -> Tensor:
        attended, _ = self.cross_attn(queries + query_pos, memory + memory_pos, memory, attn_mask=attn_mask,
                                      need_weights=False)  # fmt: skip
        queries = self.norm_cross(queries + attended)
        q = queries + query_pos
        queries = self.norm_self(queries + self.self_attn(q, q, queries, need_weights=False)[0])
        return self.norm_ffn(queries + self.ffn(queries))

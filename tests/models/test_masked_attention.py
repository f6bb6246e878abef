"""Masked attention of Mask2Former: no weight outside a query's mask, every key where the mask is empty."""

from __future__ import annotations

import torch

from pretrainlab.models.layers.masked_attention import MaskedAttentionDecoderLayer, masked_attention_mask

H = W = 4
NUM_HEADS, DIM = 2, 8


def three_queries() -> torch.Tensor:
    """Mask logits (1, 3, H, W): query 0 = left half, query 1 = one pixel, query 2 = empty."""
    logits = torch.full((1, 3, H, W), -4.0)
    logits[0, 0, :, : W // 2] = 4.0
    logits[0, 1, 2, 3] = 4.0
    return logits


def test_mask_blocks_outside_and_frees_empty_rows() -> None:
    mask = masked_attention_mask(three_queries(), (H, W), NUM_HEADS)  # (B·M, Q, H·W), True = blocked
    assert mask.shape == (NUM_HEADS, 3, H * W) and mask.dtype == torch.bool
    allowed = ~mask[0].view(3, H, W)
    assert allowed[0, :, : W // 2].all() and not allowed[0, :, W // 2 :].any()
    assert allowed[1].sum() == 1 and allowed[1, 2, 3]
    assert allowed[2].all()  # an empty mask attends everywhere
    assert torch.equal(mask[0], mask[1])  # the same mask for every head


def test_mask_is_computed_at_the_attended_resolution() -> None:
    mask = masked_attention_mask(three_queries(), (2 * H, 2 * W), NUM_HEADS)
    allowed = ~mask[0, 0].view(2 * H, 2 * W)
    assert allowed[:, :W].all() and not allowed[:, W:].any()


def test_cross_attention_weights_are_zero_outside_the_mask_and_uniform_when_empty() -> None:
    torch.manual_seed(0)
    layer = MaskedAttentionDecoderLayer(DIM, num_heads=NUM_HEADS, ffn_dim=16).eval()
    queries, query_pos = torch.randn(1, 3, DIM), torch.randn(1, 3, DIM)
    memory, memory_pos = torch.randn(1, H * W, DIM), torch.randn(1, H * W, DIM)
    attn_mask = masked_attention_mask(three_queries(), (H, W), NUM_HEADS)
    _, weights = layer.cross_attention(queries, query_pos, memory, memory_pos, attn_mask)  # (B, M, Q, S)
    weights = weights[0].view(NUM_HEADS, 3, H, W)
    assert torch.equal(weights[:, 0, :, W // 2 :], torch.zeros(NUM_HEADS, H, W // 2))
    torch.testing.assert_close(weights[:, 0].sum((-1, -2)), torch.ones(NUM_HEADS))
    torch.testing.assert_close(weights[:, 1, 2, 3], torch.ones(NUM_HEADS))  # all weight on its single pixel
    assert (weights[:, 2] > 0).all()  # the empty mask: every key gets weight

    with torch.no_grad():  # zero query projection: attention is uniform over the allowed keys
        layer.cross_attn.in_proj_weight[:DIM].zero_()
        layer.cross_attn.in_proj_bias[:DIM].zero_()
    _, weights = layer.cross_attention(queries, query_pos, memory, memory_pos, attn_mask)
    weights = weights[0].view(NUM_HEADS, 3, H, W)
    torch.testing.assert_close(weights[:, 2], torch.full((NUM_HEADS, H, W), 1 / (H * W)))
    torch.testing.assert_close(weights[:, 0, :, : W // 2], torch.full((NUM_HEADS, H, W // 2), 1 / (H * W // 2)))


def test_layer_output_shape_and_mask_changes_the_result() -> None:
    torch.manual_seed(0)
    layer = MaskedAttentionDecoderLayer(DIM, num_heads=NUM_HEADS, ffn_dim=16).eval()
    queries, query_pos = torch.randn(1, 3, DIM), torch.randn(1, 3, DIM)
    memory, memory_pos = torch.randn(1, H * W, DIM), torch.randn(1, H * W, DIM)
    masked = layer(queries, query_pos, memory, memory_pos, masked_attention_mask(three_queries(), (H, W), NUM_HEADS))
    unmasked = layer(queries, query_pos, memory, memory_pos, None)
    assert masked.shape == (1, 3, DIM)
    assert not torch.allclose(masked[0, 0], unmasked[0, 0])

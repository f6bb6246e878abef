"""CLS attention of a ViT: the recomputed weights reproduce timm's attention, the CLS row lands on the
patch grid, DINO's mass threshold keeps the smallest set holding 60 %."""

from __future__ import annotations

import pytest
import torch
from timm.layers.attention import Attention
from torch import Tensor, nn

from pretrainlab.analysis.attention import (
    attention_weights,
    cls_attention,
    mass_threshold_mask,
    tokens_to_grid,
)
from pretrainlab.models.backbones.timm_backbone import TimmBackbone


def tiny_vit() -> TimmBackbone:
    return TimmBackbone("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3).eval()


@pytest.mark.parametrize("qk_norm", [False, True])
def test_recomputed_weights_times_v_projected_equal_timms_fused_attention(qk_norm: bool) -> None:
    attn = Attention(48, num_heads=3, qkv_bias=True, qk_norm=qk_norm, norm_layer=nn.LayerNorm).eval()
    if qk_norm:  # LayerNorm starts as the identity affine map: make it matter
        for norm in (attn.q_norm, attn.k_norm):
            nn.init.normal_(norm.weight, 1.0, 0.5)
            nn.init.normal_(norm.bias, 0.0, 0.5)
    attn.fused_attn = True  # the path that returns no weights
    tokens = torch.randn(2, 17, 48)
    weights = attention_weights(attn, tokens)  # (B, heads, N, N)
    assert weights.shape == (2, 3, 17, 17)
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(2, 3, 17))
    with torch.no_grad():
        v = attn.qkv(tokens).reshape(2, 17, 3, 3, 16).permute(2, 0, 3, 1, 4)[2]  # (B, heads, N, d)
        merged = (weights @ v).transpose(1, 2).reshape(2, 17, 48)  # (B, N, heads * d)
        torch.testing.assert_close(attn.proj(attn.norm(merged)), attn(tokens), atol=1e-5, rtol=1e-5)


def test_attention_weights_refuse_other_attention_modules() -> None:
    with pytest.raises(ValueError, match="timm's Attention"):
        attention_weights(nn.MultiheadAttention(48, 3), torch.randn(1, 5, 48))


def test_tokens_to_grid_drops_prefix_tokens_in_row_major_order() -> None:
    tokens = torch.tensor([-1.0, -2.0, 0, 1, 2, 3, 4, 5])[None, :, None]  # (1, 2 prefix + 6, 1)
    grid = tokens_to_grid(tokens, num_prefix_tokens=2, grid=(2, 3))
    assert grid.tolist() == [[[[0, 1, 2], [3, 4, 5]]]]
    with pytest.raises(ValueError, match="3x3 patch grid"):
        tokens_to_grid(tokens, num_prefix_tokens=2, grid=(3, 3))


def test_cls_attention_equals_the_weights_timms_unfused_path_computes() -> None:
    backbone = tiny_vit()
    attn = backbone.model.blocks[-1].attn
    images = torch.randn(2, 3, 32, 24)  # a 4 x 3 patch grid: rows and columns cannot be swapped unnoticed
    recomputed = cls_attention(backbone, images)
    assert recomputed.shape == (2, 3, 4, 3)

    seen: list[Tensor] = []
    attn.fused_attn = False  # timm's own softmax(q k^T * scale) goes through attn_drop
    handle = attn.attn_drop.register_forward_hook(lambda _module, _inputs, output: seen.append(output))
    with torch.no_grad():
        backbone(images)
    handle.remove()
    expected = seen[-1][:, :, 0, 1:].reshape(2, 3, 4, 3)  # CLS query, patch keys, row-major
    torch.testing.assert_close(recomputed, expected, atol=1e-6, rtol=1e-5)


def test_cls_attention_refuses_a_cnn() -> None:
    resnet = TimmBackbone("resnet18", layers=[1, 1, 1, 1], channels=[8, 8, 16, 16], small_input_stem=True)
    with pytest.raises(ValueError, match="needs a ViT backbone"):
        cls_attention(resnet, torch.randn(1, 3, 32, 32))


@pytest.mark.parametrize(
    ("attention", "kept"),
    [([0.5, 0.1, 0.4], [True, False, True]), ([0.7, 0.2, 0.1], [True, False, False]),
     ([1.0, 2.0, 3.0, 4.0], [False, False, True, True]), ([3.0, 1.0], [True, False])],
)  # fmt: skip
def test_mass_threshold_keeps_the_largest_entries_until_60_percent(attention: list[float], kept: list[bool]) -> None:
    assert mass_threshold_mask(torch.tensor(attention)).tolist() == kept


def test_mass_threshold_matches_dinos_ascending_cumulative_sum() -> None:
    attention = torch.randn(4, 3, 64).mul(2).softmax(dim=-1)
    values, order = torch.sort(attention)  # DINO: ascending, keep where the cumulative share exceeds 1 - 0.6
    values = values / values.sum(dim=-1, keepdim=True)
    dino = torch.zeros_like(attention, dtype=torch.bool).scatter(-1, order, values.cumsum(dim=-1) > 1 - 0.6)
    mask = mass_threshold_mask(attention, 0.6)
    assert torch.equal(mask, dino)
    share = attention / attention.sum(dim=-1, keepdim=True)
    kept_mass = (share * mask).sum(dim=-1)
    smallest_kept = share.masked_fill(~mask, float("inf")).amin(dim=-1)
    assert (kept_mass >= 0.6).all() and (kept_mass - smallest_kept < 0.6).all()  # the smallest such set


def test_mass_threshold_is_scale_invariant_and_refuses_bad_input() -> None:
    attention = torch.rand(5, 16) + 0.01
    assert torch.equal(mass_threshold_mask(attention), mass_threshold_mask(7.0 * attention))
    assert mass_threshold_mask(attention, 1.0).all()
    for bad_mass in (0.0, 1.5):
        with pytest.raises(ValueError, match="mass must be in"):
            mass_threshold_mask(attention, bad_mass)
    with pytest.raises(ValueError, match="non-negative"):
        mass_threshold_mask(torch.tensor([0.5, -0.1, 0.6]))

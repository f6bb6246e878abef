"""The Backbone API contract over the registry (DESIGN.md, "Contracts"), for every family by name.

For each backbone, built from its config through `build_backbone`, with 1, 3 and 4 input
channels: the outputs are finite; `maps` has one (B, out_channels[i], H / strides[i],
W / strides[i]) entry per stride, finest first; `pooled` is (B, embed_dim); ViTs also
return `tokens` (B, N, D); every parameter receives a gradient from a loss on `pooled`
and `maps`. Small images and batch 2 keep the whole file fast.
"""

from __future__ import annotations

import pytest
import torch

from pretrainlab.models.backbones import BackboneConfig, TimmBackboneConfig
from pretrainlab.models.backbones import BACKBONES, Backbone, build_backbone

BATCH = 2

# (id, config without in_chans, image size, expected strides, expected patch size)
CASES: list[tuple[str, dict, int, list[int], int | None]] = [
    ("vit_patch16", {"name": "timm", "arch": "vit_tiny_patch16_224", "img_size": 32}, 32, [16], 16),
    ("vit_patch8", {"name": "timm", "arch": "vit_tiny_patch16_224", "img_size": 32, "patch_size": 8}, 32, [8], 8),
    ("convnext_atto", {"name": "timm", "arch": "convnext_atto"}, 64, [4, 8, 16, 32], None),
    ("resnet18", {"name": "timm", "arch": "resnet18"}, 64, [2, 4, 8, 16, 32], None),
    ("mit_b0", {"name": "mit", "variant": "b0"}, 64, [4, 8, 16, 32], None),
    (
        "resnet_small_stem",
        {"name": "timm", "arch": "resnet18", "small_input_stem": True, "layers": [1, 1, 1, 1]},
        32,
        [1, 1, 2, 4, 8],
        None,
    ),
    ("mobilenetv3_small_050", {"name": "timm", "arch": "mobilenetv3_small_050"}, 64, [2, 4, 8, 16, 32], None),
    ("sebnet_s", {"name": "sebnet", "size": "s"}, 64, [8, 16, 32, 64], None),
]


def _config(fields: dict, in_chans: int) -> BackboneConfig:
    return BACKBONES.get(fields["name"]).config.model_validate({**fields, "in_chans": in_chans})


def _open_zero_initialised_gates(backbone: Backbone) -> None:
    """Set norm weights initialised to exactly zero (timm's `zero_init_last` residual BNs) to one.

    A zero gate is a training trick: the branch behind it gets a zero gradient at the very
    first step only. Opening it lets the test see whether the branch is *connected*.
    """
    with torch.no_grad():
        for module in backbone.modules():
            weight = getattr(module, "weight", None)
            is_norm = isinstance(module, torch.nn.modules.batchnorm._BatchNorm | torch.nn.LayerNorm | torch.nn.GroupNorm)
            if is_norm and weight is not None and not weight.any():
                weight.fill_(1.0)


def test_every_built_in_family_is_covered() -> None:
    built_in = {name for name in BACKBONES.names() if BACKBONES.get(name).config.__module__.startswith("pretrainlab.")}
    assert {fields["name"] for _, fields, *_ in CASES} == built_in


@pytest.mark.parametrize("in_chans", [1, 3, 4])
@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_backbone_contract(case: tuple[str, dict, int, list[int], int | None], in_chans: int) -> None:
    _, fields, size, strides, patch_size = case
    backbone = build_backbone(_config(fields, in_chans)).train()
    _open_zero_initialised_gates(backbone)
    assert isinstance(backbone, Backbone)
    assert backbone.in_chans == in_chans
    assert backbone.strides == strides
    assert backbone.patch_size == patch_size
    assert len(backbone.out_channels) == len(strides)
    assert -len(strides) <= backbone.final_map_index < len(strides)

    features = backbone(torch.randn(BATCH, in_chans, size, size))
    assert features.pooled.shape == (BATCH, backbone.embed_dim)
    expected = [(BATCH, c, size // s, size // s) for c, s in zip(backbone.out_channels, strides)]
    assert [tuple(m.shape) for m in features.maps] == expected
    outputs = [features.pooled, *features.maps]
    if patch_size is not None:
        num_patches = (size // patch_size) ** 2
        assert features.tokens is not None and features.tokens.shape == (BATCH, num_patches, backbone.embed_dim)
        outputs.append(features.tokens)
    else:
        assert features.tokens is None
    assert all(torch.isfinite(out).all() for out in outputs)

    # random projections: a plain sum would give zero gradients through BatchNorm / LayerNorm
    loss = sum((out * torch.randn_like(out)).sum() for out in [features.pooled, *features.maps])
    loss.backward()
    no_grad = [name for name, p in backbone.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == [], f"parameters without a gradient: {no_grad}"
    assert all(torch.isfinite(p.grad).all() for p in backbone.parameters())


def test_wrong_channel_count_raises() -> None:
    backbone = build_backbone(TimmBackboneConfig(arch="resnet18", in_chans=4))
    with pytest.raises(ValueError, match="built for 4 input channels, got 3"):
        backbone(torch.randn(1, 3, 32, 32))


def test_vit_takes_other_sizes_than_it_was_built_for() -> None:
    """Multi-crop needs one ViT for 32- and 16-px crops: `dynamic_img_size` interpolates the position embeddings."""
    backbone = build_backbone(TimmBackboneConfig(arch="vit_tiny_patch16_224", img_size=32, patch_size=8))
    with torch.no_grad():
        for size in (16, 48):
            features = backbone(torch.randn(BATCH, 3, size, size))
            assert features.maps[0].shape == (BATCH, backbone.embed_dim, size // 8, size // 8)
            assert features.tokens is not None and features.tokens.shape[1] == (size // 8) ** 2

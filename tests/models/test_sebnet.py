"""SEBNet (DDRNet / PIDNet-family dual-resolution backbone): shapes, strides, gradients, fusion."""

from __future__ import annotations

import functools
import logging

import pytest
import torch

from pretrainlab.models.backbones.base import Backbone, global_average
from pretrainlab.models.backbones.sebnet import SEBNet
from pretrainlab.models.layers.residual import BasicBlock, Bottleneck

LOGGER = logging.getLogger(__name__)

# documented in the sebnet module docstring; a change here changes the models users train
EXPECTED_PARAMETERS = {"s": 7_025_248, "m": 28_069_056, "l": 34_930_624}
EXPECTED_CHANNELS = {"s": [128, 128, 256, 512], "m": [256, 256, 512, 1024], "l": [256, 256, 512, 1024]}


@functools.cache
def _eval_model(size: str) -> SEBNet:
    """One shared model per size for the tests that only run it under no_grad."""
    return SEBNet(size).eval()  # type: ignore[arg-type]


@pytest.mark.parametrize("size", ["s", "m", "l"])
def test_sizes_channels_and_parameter_counts(size: str) -> None:
    model = _eval_model(size)
    num_parameters = sum(p.numel() for p in model.parameters())
    LOGGER.info("SEBNet-%s: %d parameters", size, num_parameters)
    assert isinstance(model, Backbone)
    assert num_parameters == EXPECTED_PARAMETERS[size]
    assert model.out_channels == EXPECTED_CHANNELS[size]
    assert model.strides == [8, 16, 32, 64]
    assert model.embed_dim == model.out_channels[0] + model.out_channels[3]
    assert model.patch_size is None
    assert model.final_map_index == 3


@pytest.mark.parametrize(
    "size, height, width", [("s", 64, 64), ("s", 48, 80), ("s", 32, 32), ("m", 48, 80), ("l", 48, 80)]
)
def test_output_shapes(size: str, height: int, width: int) -> None:
    model = _eval_model(size)
    with torch.no_grad():
        features = model(torch.randn(2, 3, height, width))
    expected_sizes = {
        (64, 64): [(8, 8), (4, 4), (2, 2), (1, 1)],
        (48, 80): [(6, 10), (3, 5), (2, 3), (1, 2)],  # ceil at every halving
        (32, 32): [(4, 4), (2, 2), (1, 1), (1, 1)],
    }[(height, width)]
    assert model.map_sizes(height, width) == expected_sizes
    assert [tuple(m.shape) for m in features.maps] == [
        (2, c, h, w) for c, (h, w) in zip(model.out_channels, expected_sizes)
    ]
    assert features.pooled.shape == (2, model.embed_dim)
    assert features.tokens is None
    assert all(torch.isfinite(m).all() for m in features.maps)
    assert torch.isfinite(features.pooled).all()


def test_strides_are_exact_for_multiples_of_64() -> None:
    model = _eval_model("s")
    with torch.no_grad():
        features = model(torch.randn(1, 3, 128, 192))
    assert [(128 // m.shape[2], 192 // m.shape[3]) for m in features.maps] == [(s, s) for s in model.strides]


def test_pooled_is_global_average_of_high_and_context_maps() -> None:
    model = _eval_model("s")
    with torch.no_grad():
        features = model(torch.randn(2, 3, 64, 96))
    expected = torch.cat([global_average(features.maps[0]), global_average(features.maps[3])], dim=1)
    torch.testing.assert_close(features.pooled, expected)


def test_every_parameter_gets_a_gradient() -> None:
    model = SEBNet("s", zero_init_residual=False).train()  # a zero gate would hide whether a branch is wired
    features = model(torch.randn(2, 3, 64, 64))
    # random projections: a plain sum would give zero gradients through BatchNorm
    loss = sum((m * torch.randn_like(m)).sum() for m in features.maps)
    loss = loss + (features.pooled * torch.randn_like(features.pooled)).sum()
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_pooled_alone_reaches_every_parameter() -> None:
    model = SEBNet("s", zero_init_residual=False).train()
    pooled = model(torch.randn(2, 3, 64, 64)).pooled
    (pooled * torch.randn_like(pooled)).sum().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []


@pytest.mark.parametrize("in_chans", [1, 3, 4])
def test_input_channels(in_chans: int) -> None:
    model = SEBNet("s", in_chans=in_chans).eval()
    assert model.stem[0].conv.weight.shape[1] == in_chans
    with torch.no_grad():
        features = model(torch.randn(1, in_chans, 48, 48))
    assert features.maps[0].shape == (1, 128, 6, 6)


def test_bad_input_raises() -> None:
    model = SEBNet("s", in_chans=3)
    with pytest.raises(ValueError, match="built for 3 input channels, got 4"):
        model(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match=r"expects images \(B, C, H, W\)"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="unknown SEBNet size 'xl'"):
        SEBNet("xl")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="in_chans must be >= 1, got 0"):
        SEBNet("s", in_chans=0)


def _outputs(model: SEBNet, images: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return model(images).maps


def test_bilateral_fusion_connects_both_branches() -> None:
    model = SEBNet("s").eval()
    images = torch.randn(1, 3, 48, 80)
    before = _outputs(model, images)
    with torch.no_grad():  # cut low -> high: the high-resolution map must change, the 1/16 map must not
        model.fuse3.compress.conv.weight.zero_()
        model.fuse4.compress.conv.weight.zero_()
    cut_low_to_high = _outputs(model, images)
    assert not torch.allclose(before[0], cut_low_to_high[0])
    torch.testing.assert_close(before[1], cut_low_to_high[1])
    with torch.no_grad():  # also cut high -> low at stage 3: the 1/16 map must change
        model.fuse3.down[0].conv.weight.zero_()
    cut_both = _outputs(model, images)
    assert not torch.allclose(cut_low_to_high[1], cut_both[1])


def test_zero_init_residual_starts_every_block_as_its_shortcut() -> None:
    model = SEBNet("s").train()
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock | Bottleneck)]
    assert len(blocks) == 2 + 2 + 3 + 3 + 3 + 3 + 2 + 1  # stage1, stage2, low3/high3, low4/high4, contexts
    x = torch.randn(2, 32, 8, 8)  # stage1 keeps p = 32 channels
    block = model.stage1[1]  # identity shortcut: the block is ReLU(x) at init
    torch.testing.assert_close(block(x), torch.relu(x))
    pooled = model(torch.randn(2, 3, 64, 64)).pooled
    (pooled * torch.randn_like(pooled)).sum().backward()
    assert all(block.last_bn.weight.grad.abs().sum() > 0 for block in blocks)  # the gates open after one step


def test_plain_init_keeps_residual_branches_open() -> None:
    model = SEBNet("s", zero_init_residual=False)
    assert all(m.last_bn.weight.eq(1).all() for m in model.modules() if isinstance(m, BasicBlock | Bottleneck))

"""DAPPM / PAPPM pyramid pooling necks (DDRNet, PIDNet): shapes, branches, hierarchy, tiny maps."""

from __future__ import annotations

import pytest
import torch

from pretrainlab.models.backbones.sebnet import SEBNet
from pretrainlab.models.necks import DAPPM, PAPPM, Neck

NECKS = [DAPPM, PAPPM]


@pytest.mark.parametrize("neck_class", NECKS)
@pytest.mark.parametrize("height, width", [(1, 1), (2, 2), (1, 3), (5, 7), (16, 16), (20, 36)])
def test_output_shape(neck_class: type[Neck], height: int, width: int) -> None:
    neck = neck_class(32, 16, 24)
    out = neck(torch.randn(2, 32, height, width))
    assert isinstance(neck, Neck)
    assert neck.out_channels == 24
    assert out.shape == (2, 24, height, width)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("neck_class", NECKS)
def test_every_branch_changes_the_output(neck_class: type[Neck]) -> None:
    neck = neck_class(16, 8, 12).eval()
    x = torch.randn(2, 16, 16, 16)
    with torch.no_grad():
        reference = neck(x)
    branches = [neck.scale0, *neck.scales]
    assert len(branches) == 5
    for index, branch in enumerate(branches):
        saved = branch.conv.weight.detach().clone()
        with torch.no_grad():
            branch.conv.weight.zero_()
            changed = neck(x)
            branch.conv.weight.copy_(saved)
        assert not torch.allclose(changed, reference, atol=1e-6), f"branch {index} does not reach the output"
    with torch.no_grad():
        torch.testing.assert_close(neck(x), reference)  # weights restored


def _process_inputs(neck: Neck, x: torch.Tensor) -> list[torch.Tensor]:
    """The inputs of the 3×3 processing convs, captured by hooks."""
    captured: list[torch.Tensor] = []
    processes = neck.process if isinstance(neck, DAPPM) else [neck.process]
    handles = [p.register_forward_hook(lambda _m, args, _out: captured.append(args[0].clone())) for p in processes]
    with torch.no_grad():
        neck(x)
    for handle in handles:
        handle.remove()
    return captured


def test_dappm_is_hierarchical() -> None:
    """In DAPPM the last processing conv sees the 5×5-pool branch through the chain y1 -> y2 -> y3."""
    neck = DAPPM(16, 8, 12).eval()
    x = torch.randn(1, 16, 16, 16)
    before = _process_inputs(neck, x)
    with torch.no_grad():
        neck.scales[0].conv.weight.zero_()
    after = _process_inputs(neck, x)
    assert len(before) == 4
    assert all(not torch.allclose(b, a) for b, a in zip(before, after))


def test_pappm_is_parallel() -> None:
    """In PAPPM each group of the grouped conv sees only its own pooled branch plus scale0."""
    neck = PAPPM(16, 8, 12).eval()
    x = torch.randn(1, 16, 16, 16)
    (before,) = _process_inputs(neck, x)
    with torch.no_grad():
        neck.scales[0].conv.weight.zero_()
    (after,) = _process_inputs(neck, x)
    assert before.shape == (1, 32, 16, 16)
    assert not torch.allclose(before[:, :8], after[:, :8])
    torch.testing.assert_close(before[:, 8:], after[:, 8:])
    assert neck.process.conv.groups == 4


@pytest.mark.parametrize("neck_class", NECKS)
def test_count_include_pad_on_a_tiny_constant_map(neck_class: type[Neck]) -> None:
    """Without padding counted, pooling a constant map returns the same constant; with it
    (the DDRNet default) a 2×2 map is diluted by the zero padding."""
    x = torch.full((1, 8, 2, 2), 3.0)
    exact = neck_class(8, 4, 4, count_include_pad=False)
    for pool in exact.pools:
        torch.testing.assert_close(pool(x), torch.full_like(pool(x), 3.0))
    diluted = neck_class(8, 4, 4)
    # 5×5 window at stride 2, padding 2 over a 2×2 map: one window holding the 4 valid cells
    torch.testing.assert_close(diluted.pools[0](x), torch.full((1, 8, 1, 1), 3.0 * 4 / 25))


def test_dappm_on_sebnet_context_map() -> None:
    """DDRNet usage: DAPPM on the 1/64 context map, out_channels = channels of the 1/8 map."""
    backbone = SEBNet("s").eval()
    neck = DAPPM(backbone.out_channels[backbone.final_map_index], 96, backbone.out_channels[0]).eval()
    with torch.no_grad():
        maps = backbone(torch.randn(2, 3, 96, 96)).maps
        out = neck(maps[backbone.final_map_index])
    assert out.shape == (2, 128, 2, 2)


@pytest.mark.parametrize("neck_class", NECKS)
def test_bad_input_raises(neck_class: type[Neck]) -> None:
    neck = neck_class(16, 8, 12)
    with pytest.raises(ValueError, match=r"expects a map \(B, 16, H, W\), got shape \(2, 8, 4, 4\)"):
        neck(torch.randn(2, 8, 4, 4))
    with pytest.raises(ValueError, match="branch_channels must be >= 1, got 0"):
        neck_class(16, 0, 12)

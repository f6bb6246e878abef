"""ConvBnAct on a 1×1 map with a strided conv: exact, and a correct bf16 weight gradient (oneDNN workaround)."""

from __future__ import annotations

import pytest
import torch

from pretrainlab.models.layers.conv_bn_act import ConvBnAct


@pytest.mark.parametrize("groups", [1, 4])
def test_centre_tap_path_equals_the_convolution(groups: int) -> None:
    layer = ConvBnAct(8, 16, 3, stride=2, groups=groups).eval()
    x = torch.randn(4, 8, 1, 1, dtype=torch.float64)
    layer.double()
    with torch.no_grad():
        torch.testing.assert_close(layer(x), layer.act(layer.bn(layer.conv(x))))


def test_bf16_weight_gradient_on_a_one_by_one_map_matches_fp32() -> None:
    layer = ConvBnAct(32, 32, 3, stride=2).eval()  # BN as a fixed affine map: the error is the conv's
    x = torch.randn(64, 32, 1, 1)
    grad_out = torch.randn(64, 32, 1, 1)
    layer(x).backward(grad_out)
    reference = layer.conv.weight.grad.clone()
    layer.conv.weight.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    out.float().backward(grad_out)
    got = layer.conv.weight.grad
    assert torch.isfinite(got).all()
    assert (got - reference).abs().max() <= 0.02 * reference.abs().max()
    assert got[:, :, [0, 2]].abs().max() == 0 and got[:, :, :, [0, 2]].abs().max() == 0  # only the centre tap

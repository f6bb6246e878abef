"""ConvBnAct on a 1×1 map (the centre-tap path): exact for any stride, and a correct bf16 weight gradient
(oneDNN workaround)."""

from __future__ import annotations

import pytest
import torch

from pretrainlab.models.layers.conv_bn_act import BnActConv, ConvBnAct


@pytest.mark.parametrize("groups", [1, 4])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kernel_size", [3, 5])
def test_centre_tap_path_equals_the_convolution(groups: int, stride: int, kernel_size: int) -> None:
    layer = ConvBnAct(8, 16, kernel_size, stride=stride, groups=groups).double()
    x = torch.randn(4, 8, 1, 1, dtype=torch.float64, requires_grad=True)
    out = layer(x)
    expected = layer.act(layer.bn(layer.conv(x)))
    torch.testing.assert_close(out, expected)
    grad_out = torch.randn_like(out)
    got = torch.autograd.grad(out, [x, layer.conv.weight], grad_out)
    want = torch.autograd.grad(expected, [x, layer.conv.weight], grad_out)
    for got_grad, want_grad in zip(got, want, strict=True):  # the input and the (centre-tap-only) weight gradient
        torch.testing.assert_close(got_grad, want_grad)


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


def test_pre_activation_unit_on_a_one_by_one_map_equals_the_convolution() -> None:
    layer = BnActConv(8, 16, 3).double()
    x = torch.randn(4, 8, 1, 1, dtype=torch.float64)
    torch.testing.assert_close(layer(x), layer.conv(layer.act(layer.bn(x))))

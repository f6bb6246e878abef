"""Softmax entropy (losses/entropy.py): hand values, pixel averaging, stability, gradient, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pretrainlab.losses.entropy import softmax_entropy

LN3 = math.log(3.0)
ENTROPY_QUARTER = math.log(4.0) - 0.75 * LN3  # p = (1/4, 3/4): −¼ ln ¼ − ¾ ln ¾ = 0.5623351...


@pytest.mark.parametrize("num_classes", [2, 5, 19])
def test_uniform_prediction_gives_log_k(num_classes: int) -> None:
    logits = torch.full((2, num_classes, 3, 4), 7.5)
    assert float(softmax_entropy(logits)) == pytest.approx(math.log(num_classes), abs=1e-6)


def test_two_classes_with_probabilities_one_quarter_and_three_quarters() -> None:
    logits = torch.tensor([0.0, LN3]).view(1, 2, 1, 1)  # softmax = (1/4, 3/4)
    assert float(softmax_entropy(logits)) == pytest.approx(ENTROPY_QUARTER, abs=1e-6)
    assert ENTROPY_QUARTER == pytest.approx(0.5623351446, abs=1e-9)


def test_mean_over_batch_and_pixels() -> None:
    pixels = torch.tensor([[0.0, 0.0], [0.0, LN3], [1000.0, 0.0], [0.0, 1000.0]])  # (4 pixels, K=2)
    logits = pixels.view(2, 1, 2, 2).permute(0, 3, 1, 2)  # (B=2, K=2, H=1, W=2)
    expected = (math.log(2.0) + ENTROPY_QUARTER + 0.0 + 0.0) / 4  # 0.3138705...
    assert float(softmax_entropy(logits)) == pytest.approx(expected, abs=1e-6)


def test_matches_float64_reference_over_shapes() -> None:
    g = torch.Generator().manual_seed(3)
    for shape in [(1, 3, 1, 1), (2, 19, 5, 7), (4, 10), (3, 4, 2, 2, 2)]:
        logits = torch.randn(shape, generator=g, dtype=torch.float64) * 4.0
        z = np.moveaxis(logits.numpy(), 1, -1)  # (..., K)
        p = np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)
        expected = float((-(p * np.log(p)).sum(axis=-1)).mean())
        assert float(softmax_entropy(logits)) == pytest.approx(expected, rel=1e-12), shape
        assert float(softmax_entropy(logits.float())) == pytest.approx(expected, rel=1e-5), shape


def test_gradient_of_binary_entropy_by_hand() -> None:
    # H(d) with p = σ(d), d = z1 − z0: dH/dd = −d · p (1 − p); at d = ln 3, p = 3/4: −ln 3 · 3/16
    logits = torch.tensor([0.0, LN3], dtype=torch.float64).view(1, 2, 1, 1).requires_grad_(True)
    softmax_entropy(logits).backward()
    slope = -LN3 * 3.0 / 16.0  # −0.2059913...
    torch.testing.assert_close(logits.grad.view(2), torch.tensor([-slope, slope], dtype=torch.float64))


def test_saturated_logits_give_zero_with_finite_gradient() -> None:
    logits = torch.tensor([1000.0, 0.0, -1000.0]).view(1, 3, 1, 1).requires_grad_(True)
    loss = softmax_entropy(logits)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(logits.grad).all()


def test_low_precision_input_is_computed_in_float32() -> None:
    logits = torch.tensor([0.0, LN3]).view(1, 2, 1, 1).to(torch.bfloat16)
    loss = softmax_entropy(logits)
    assert loss.dtype == torch.float32
    assert float(loss) == pytest.approx(ENTROPY_QUARTER, abs=1e-2)  # ln 3 itself is rounded to bfloat16


@pytest.mark.parametrize(
    ("logits", "message"),
    [
        (torch.zeros(5), "shape"),
        (torch.zeros(2, 3, dtype=torch.long), "dtype"),
        (torch.zeros(0, 3, 4, 4), "empty"),
        (torch.tensor([[0.0, float("inf")]]), "non-finite"),
        (torch.tensor([[0.0, float("nan")]]), "non-finite"),
    ],
)
def test_bad_input_raises(logits: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        softmax_entropy(logits)

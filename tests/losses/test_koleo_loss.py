"""KoLeo: reference numbers from facebookresearch/dinov2 `KoLeoLoss`, hand cases, per-crop use."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import load_reference

from pretrainlab.losses.koleo import KoLeoLoss, koleo_loss, koleo_per_crop


@pytest.mark.reference
@pytest.mark.parametrize("use_module", [False, True])
def test_matches_reference_cases(use_module: bool) -> None:
    z = load_reference("koleo")
    loss_fn = KoLeoLoss() if use_module else koleo_loss
    for i in range(int(z["n_cases"])):
        x = torch.tensor(z[f"case{i}/x"], requires_grad=True)
        loss = loss_fn(x)
        loss.backward()
        label = f"case{i} ({z[f'case{i}/kind']}, shape {tuple(x.shape)})"
        np.testing.assert_allclose(loss.item(), float(z[f"case{i}/loss"]), rtol=1e-5, atol=1e-5, err_msg=label)
        grad_ref = z[f"case{i}/grad_x"]
        assert np.isfinite(x.grad.numpy()).all(), label
        assert np.abs(x.grad.numpy() - grad_ref).max() <= 1e-4 * np.abs(grad_ref).max(), label


def test_opposite_unit_vectors_give_minus_log_two() -> None:
    loss = koleo_loss(torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64))
    assert float(loss) == pytest.approx(-math.log(2.0), abs=1e-7)


def test_invariant_to_row_scale() -> None:
    x = torch.randn(6, 5)
    scaled = x * torch.tensor([[0.1], [2.0], [30.0], [1.0], [5.0], [0.5]])
    torch.testing.assert_close(koleo_loss(scaled), koleo_loss(x))


def test_identical_rows_give_large_finite_loss() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [0.0, -1.0, 0.5]], requires_grad=True)
    loss = koleo_loss(x)
    loss.backward()
    assert loss.item() > 10.0
    assert torch.isfinite(x.grad).all()


def test_per_crop_never_pairs_two_views_of_one_image() -> None:
    view = torch.randn(8, 16)
    both_views = torch.cat([view, view])  # (2*B, D): crop 1 repeats crop 0
    per_crop = koleo_per_crop(both_views, num_crops=2)
    torch.testing.assert_close(per_crop, koleo_loss(view))
    assert float(koleo_loss(both_views)) > float(per_crop) + 10.0  # whole batch: every row meets its twin


def test_per_crop_is_mean_over_blocks_and_module_matches() -> None:
    x = torch.randn(3 * 5, 4)
    expected = torch.stack([koleo_loss(block) for block in x.chunk(3)]).mean()
    torch.testing.assert_close(koleo_per_crop(x, 3), expected)
    torch.testing.assert_close(KoLeoLoss(num_crops=3)(x), expected)


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match=r"at least 2 rows.*\(1, 4\)"):
        koleo_loss(torch.randn(1, 4))
    with pytest.raises(ValueError, match=r"features \(N, D\), got shape \(4,\)"):
        koleo_loss(torch.randn(4))
    with pytest.raises(ValueError, match="7 rows, expected a multiple of num_crops=2"):
        koleo_per_crop(torch.randn(7, 4), 2)
    with pytest.raises(ValueError, match=r"at least 2 rows.*\(1, 4\)"):
        koleo_per_crop(torch.randn(2, 4), 2)
    with pytest.raises(ValueError, match="num_crops must be >= 1, got 0"):
        KoLeoLoss(num_crops=0)

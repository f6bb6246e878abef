"""MMSeg's poly learning-rate decay (PolyLR, power 0.9, eta_min) with linear warm-up."""

from __future__ import annotations

import numpy as np
import pytest

from pretrainlab.engine.schedules import poly_schedule


def test_poly_values_by_hand() -> None:
    lrs = poly_schedule(0.01, 1e-4, 4, power=0.9)
    expected = [1e-4 + (0.01 - 1e-4) * (1 - t / 4) ** 0.9 for t in range(4)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-12)
    assert lrs[0] == 0.01 and lrs[2] == pytest.approx(1e-4 + 0.0099 * 0.5**0.9)


def test_mmengine_recursive_form_matches() -> None:
    """MMEngine's PolyLR updates lr_t = (lr_{t-1} - min) * (1 - 1 / (T - t + 1)) ** power + min."""
    total, base, final, power = 50, 0.02, 0.0, 0.9
    lr, recursive = base, [base]
    for t in range(1, total):
        lr = (lr - final) * (1 - 1 / (total - t + 1)) ** power + final
        recursive.append(lr)
    np.testing.assert_allclose(poly_schedule(base, final, total, power=power), recursive, rtol=1e-10)


def test_warmup_then_poly() -> None:
    lrs = poly_schedule(1.0, 0.0, 10, power=1.0, warmup_iters=4, warmup_start_factor=0.0)
    np.testing.assert_allclose(lrs[:4], [0.0, 0.25, 0.5, 0.75])
    np.testing.assert_allclose(lrs[4:], [1 - t / 6 for t in range(6)])
    with pytest.raises(ValueError, match="total_iters"):
        poly_schedule(1.0, 0.0, 0)

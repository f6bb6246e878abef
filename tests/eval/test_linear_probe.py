"""Linear probe: ~100 % on linearly separable features, ~chance on random labels, fast on 20k x 128."""

from __future__ import annotations

import time

import pytest
import torch

from pretrainlab.eval.linear_probe import fit_linear_probe, standardise


def gaussian_classes(num: int, dim: int, num_classes: int, separation: float, seed: int) -> tuple:
    generator = torch.Generator().manual_seed(seed)
    means = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(0)) * separation
    labels = torch.randint(0, num_classes, (num,), generator=generator)
    return means[labels] + torch.randn(num, dim, generator=generator), labels


def test_separable_features_are_classified_perfectly() -> None:
    train_x, train_y = gaussian_classes(2000, 32, 5, separation=3.0, seed=1)
    val_x, val_y = gaussian_classes(500, 32, 5, separation=3.0, seed=2)
    result = fit_linear_probe(train_x * 100 + 7, train_y, val_x * 100 + 7, val_y)  # scale / shift: standardised
    assert result.top1 == 100.0 and result.train_top1 == 100.0
    assert (result.num_train, result.num_val) == (2000, 500)


def test_random_labels_give_chance_accuracy() -> None:
    train_x, _ = gaussian_classes(4000, 32, 4, separation=3.0, seed=1)
    val_x, _ = gaussian_classes(2000, 32, 4, separation=3.0, seed=2)
    train_y = torch.randint(0, 4, (4000,), generator=torch.Generator().manual_seed(3))
    val_y = torch.randint(0, 4, (2000,), generator=torch.Generator().manual_seed(4))
    result = fit_linear_probe(train_x, train_y, val_x, val_y)
    assert 20.0 < result.top1 < 30.0  # chance is 25 %; 2000 samples: std ~1 point


def test_the_probe_beats_chance_on_overlapping_classes_and_uses_num_classes() -> None:
    train_x, train_y = gaussian_classes(3000, 16, 3, separation=0.3, seed=1)
    val_x, val_y = gaussian_classes(1000, 16, 3, separation=0.3, seed=2)
    result = fit_linear_probe(train_x, train_y, val_x, val_y, num_classes=10)
    assert 50.0 < result.top1 < 100.0


def test_standardise_uses_training_statistics_and_keeps_constant_dimensions_finite() -> None:
    train = torch.tensor([[1.0, 5.0], [3.0, 5.0]])
    val = torch.tensor([[2.0, 6.0]])
    train_z, val_z = standardise(train, val)
    assert torch.allclose(train_z[:, 0], torch.tensor([-1.0, 1.0]) / 2**0.5)  # unbiased std of (1, 3) is sqrt 2
    assert val_z[0, 0] == 0.0 and torch.isfinite(val_z).all() and (train_z[:, 1] == 0).all()


def test_mismatched_inputs_raise() -> None:
    with pytest.raises(ValueError, match="same D"):
        fit_linear_probe(torch.zeros(4, 3), torch.zeros(4), torch.zeros(2, 5), torch.zeros(2))
    with pytest.raises(ValueError, match="differ in length"):
        fit_linear_probe(torch.zeros(4, 3), torch.zeros(3), torch.zeros(2, 3), torch.zeros(2))


def test_twenty_thousand_by_128_features_fit_in_seconds() -> None:
    train_x, train_y = gaussian_classes(20000, 128, 10, separation=0.15, seed=1)
    val_x, val_y = gaussian_classes(2000, 128, 10, separation=0.15, seed=2)
    started = time.perf_counter()
    result = fit_linear_probe(train_x, train_y, val_x, val_y)
    assert time.perf_counter() - started < 10.0  # about 1-2 s on one core
    assert 30.0 < result.top1 < 100.0

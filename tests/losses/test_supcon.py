"""SupCon loss: SupContrast's reference numbers, hand-computed cases, pytorch-metric-learning as an oracle, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import load_reference

from pretrainlab.losses.infonce import info_nce_loss, supcon_loss


@pytest.mark.reference
def test_matches_supcontrast_reference_cases() -> None:
    reference = load_reference("supcon")
    for case in range(int(reference["n_cases"])):
        key = f"case{case}/"
        features = torch.from_numpy(reference[key + "features"]).requires_grad_()  # (B, V, D) float32
        labels = None if int(reference[key + "labels_none"]) else torch.from_numpy(reference[key + "labels"])
        loss = supcon_loss(
            features,
            labels,
            temperature=float(reference[key + "temperature"]),
            base_temperature=float(reference[key + "base_temperature"]),
            contrast_mode=str(reference[key + "contrast_mode"]),
        )
        loss.backward()
        expected_grad = torch.from_numpy(reference[key + "grad_features"])
        torch.testing.assert_close(loss.detach(), torch.tensor(float(reference[key + "loss"])), rtol=1e-5, atol=0.0,
                                   msg=lambda message, case=case: f"case {case} loss: {message}")  # fmt: skip
        tolerance = 1e-5 * float(expected_grad.abs().max())
        assert float((features.grad - expected_grad).abs().max()) <= tolerance, f"case {case} gradient"


# Four unit vectors in the plane: view 0 of samples 0 and 1 is (u0, u1), view 1 is (v0, v1).
# Similarities: u0.u1 = 0, u0.v0 = 0.6, u0.v1 = -0.8, u1.v0 = 0.8, u1.v1 = 0.6, v0.v1 = 0.
HAND_FEATURES = torch.tensor([[[1.0, 0.0], [0.6, 0.8]], [[0.0, 1.0], [-0.8, 0.6]]], dtype=torch.float64)


def _hand_terms(temperature: float) -> tuple[float, float]:
    """log-denominators of u0 (and v1, whose other rows have the same similarities) and u1 (and v0)."""
    log_denominator_u0 = math.log(1.0 + math.exp(0.6 / temperature) + math.exp(-0.8 / temperature))
    log_denominator_u1 = math.log(1.0 + math.exp(0.8 / temperature) + math.exp(0.6 / temperature))
    return log_denominator_u0, log_denominator_u1


@pytest.mark.parametrize("contrast_mode", ["all", "one"])
def test_two_samples_two_views_without_labels_by_hand(contrast_mode: str) -> None:
    temperature, base_temperature = 0.5, 0.25
    log_denominator_u0, log_denominator_u1 = _hand_terms(temperature)
    # each anchor's only positive is its other view, at similarity 0.6 for all four anchors
    per_anchor = [log_denominator_u0 - 0.6 / temperature, log_denominator_u1 - 0.6 / temperature]
    expected = temperature / base_temperature * sum(per_anchor) / 2  # "all": v1 repeats u0's term, v0 repeats u1's
    loss = supcon_loss(HAND_FEATURES, None, temperature=temperature, base_temperature=base_temperature,
                       contrast_mode=contrast_mode)  # fmt: skip
    assert float(loss) == pytest.approx(expected, rel=1e-12)


def test_two_samples_two_views_of_one_class_by_hand() -> None:
    temperature = 0.2
    log_denominator_u0, log_denominator_u1 = _hand_terms(temperature)
    # all three other rows are positives: mean similarity (0 + 0.6 - 0.8) / 3 for u0, (0 + 0.8 + 0.6) / 3 for u1
    per_anchor = [log_denominator_u0 + 0.2 / 3 / temperature, log_denominator_u1 - 1.4 / 3 / temperature]
    loss = supcon_loss(HAND_FEATURES, torch.tensor([5, 5]), temperature=temperature, base_temperature=temperature)
    assert float(loss) == pytest.approx(sum(per_anchor) / 2, rel=1e-12)


def test_anchor_without_positive_counts_as_zero_and_stays_finite() -> None:
    # one view, labels [0, 0, 1]: sample 2 has no positive; its term is 0 but it counts in the mean
    temperature = 0.1
    features = torch.tensor([[[1.0, 0.0]], [[0.6, 0.8]], [[0.0, 1.0]]], dtype=torch.float64, requires_grad=True)
    loss = supcon_loss(features, torch.tensor([0, 0, 1]), temperature=temperature, base_temperature=temperature)
    anchor_0 = math.log(math.exp(0.6 / temperature) + 1.0) - 0.6 / temperature
    anchor_1 = math.log(math.exp(0.6 / temperature) + math.exp(0.8 / temperature)) - 0.6 / temperature
    assert float(loss.detach()) == pytest.approx((anchor_0 + anchor_1) / 3, rel=1e-12)
    loss.backward()
    assert torch.isfinite(features.grad).all()
    assert float(features.grad[2].abs().sum()) > 0.0  # still a negative in the other anchors' denominators


def test_only_anchors_without_positive_give_zero() -> None:
    features = F.normalize(torch.randn(4, 1, 8), dim=-1).requires_grad_()
    loss = supcon_loss(features, torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.equal(features.grad, torch.zeros_like(features))


def test_no_labels_is_each_sample_its_own_class() -> None:
    features = F.normalize(torch.randn(6, 3, 16, dtype=torch.float64), dim=-1)
    for mode in ("all", "one"):
        unsupervised = supcon_loss(features, None, temperature=0.3, base_temperature=0.1, contrast_mode=mode)
        own_class = supcon_loss(features, torch.arange(6), temperature=0.3, base_temperature=0.1, contrast_mode=mode)
        torch.testing.assert_close(unsupervised, own_class, rtol=1e-14, atol=0.0)


def test_info_nce_is_two_view_supcon_on_normalised_embeddings() -> None:
    z_a, z_b, labels = torch.randn(5, 7), 3.0 * torch.randn(5, 7), torch.tensor([1, 0, 1, 2, 0])
    views = torch.stack([F.normalize(z_a, dim=-1), F.normalize(z_b, dim=-1)], dim=1)  # (B, 2, D)
    torch.testing.assert_close(
        info_nce_loss(z_a, z_b, 0.2, labels=labels), supcon_loss(views, labels, temperature=0.2, base_temperature=0.2)
    )


@pytest.mark.parametrize(("temperature", "base_temperature", "num_views"), [(0.07, 0.07, 2), (0.1, 0.07, 3)])
def test_matches_pytorch_metric_learning(temperature: float, base_temperature: float, num_views: int) -> None:
    """PML's SupConLoss takes (V*B, D) embeddings (cosine similarity, so it normalises them) and
    labels, excludes the anchor from its own denominator like SupContrast, has no base
    temperature, and averages over the anchors with a positive only (AvgNonZeroReducer).
    So ours ("all" mode, normalised features) = T / T_base * PML * (anchors with a positive / all anchors)."""
    from pytorch_metric_learning import losses as pml_losses  # the test extra: an oracle, never skipped
    raw = torch.randn(10, num_views, 12, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 3, 3, 1])
    ours_raw, pml_raw = raw.clone().requires_grad_(), raw.clone().requires_grad_()
    ours = supcon_loss(F.normalize(ours_raw, dim=-1), labels, temperature=temperature,
                       base_temperature=base_temperature)  # fmt: skip
    embeddings = pml_raw.transpose(0, 1).reshape(-1, 12)  # (V*B, D), view-major as SupContrast
    pml = pml_losses.SupConLoss(temperature=temperature)(embeddings, labels.repeat(num_views))
    scaled = temperature / base_temperature * pml
    torch.testing.assert_close(ours, scaled, rtol=1e-10, atol=0.0)
    ours.backward()
    scaled.backward()
    torch.testing.assert_close(ours_raw.grad, pml_raw.grad, rtol=1e-8, atol=1e-12)


def test_pytorch_metric_learning_skips_anchors_without_positive_where_we_count_zero() -> None:
    from pytorch_metric_learning import losses as pml_losses  # the test extra: an oracle, never skipped
    features = F.normalize(torch.randn(7, 1, 6, dtype=torch.float64), dim=-1)
    labels = torch.tensor([0, 0, 1, 2, 2, 2, 3])  # samples 2 and 6 have no positive
    ours = supcon_loss(features, labels, temperature=0.1, base_temperature=0.1)
    pml = pml_losses.SupConLoss(temperature=0.1)(features[:, 0], labels)
    torch.testing.assert_close(ours, pml * 5 / 7, rtol=1e-10, atol=0.0)


def test_bad_inputs_raise() -> None:
    features = torch.randn(3, 2, 4)
    with pytest.raises(ValueError, match=r"shape \(B, V, D\).*got torch.float32 \(3, 4\)"):
        supcon_loss(torch.randn(3, 4))
    with pytest.raises(ValueError, match=r"floating features.*torch.int64 \(3, 2, 4\)"):
        supcon_loss(torch.ones(3, 2, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"B, V, D >= 1, got torch.float32 \(0, 2, 4\)"):
        supcon_loss(torch.randn(0, 2, 4))
    with pytest.raises(ValueError, match="temperature must be > 0, got 0.0"):
        supcon_loss(features, temperature=0.0)
    with pytest.raises(ValueError, match="base_temperature must be > 0, got -1.0"):
        supcon_loss(features, base_temperature=-1.0)
    with pytest.raises(ValueError, match="contrast_mode must be one of all, one; got 'two'"):
        supcon_loss(features, contrast_mode="two")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"integer labels of shape \(3,\), got torch.float32 \(3,\)"):
        supcon_loss(features, torch.tensor([0.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match=r"integer labels of shape \(3,\), got torch.int64 \(2,\)"):
        supcon_loss(features, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"at least two contrast rows, got features \(1, 1, 4\)"):
        supcon_loss(torch.randn(1, 1, 4))

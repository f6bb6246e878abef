"""NT-Xent / SupCon: hand-computed values, an independent loop implementation, properties."""

from __future__ import annotations

import math

import pytest
import torch

from pretrainlab.losses.infonce import InfoNCELoss, info_nce_loss


def _loop_reference(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float, labels: torch.Tensor | None) -> float:
    """Khosla et al. 2020 eq. 2 written out anchor by anchor (NT-Xent when every label is unique)."""
    z = torch.nn.functional.normalize(torch.cat([z_a, z_b]).double(), dim=1)
    keys = torch.arange(len(z_a)) if labels is None else labels
    keys = torch.cat([keys, keys]).tolist()
    total = 0.0
    for i in range(len(z)):
        others = [a for a in range(len(z)) if a != i]
        denominator = sum(math.exp(float(z[i] @ z[a]) / temperature) for a in others)
        positives = [p for p in others if keys[p] == keys[i]]
        total += -sum(float(z[i] @ z[p]) / temperature - math.log(denominator) for p in positives) / len(positives)
    return total / len(z)


def test_two_orthogonal_samples_by_hand() -> None:
    # anchors e1, e2 (each twice): candidates of e1 are e2 (sim 0), e1 (positive, sim 1), e2 (sim 0)
    temperature = 0.5
    z = torch.eye(2)
    expected = -math.log(math.exp(1 / temperature) / (math.exp(1 / temperature) + 2.0))
    assert float(info_nce_loss(z, z.clone(), temperature)) == pytest.approx(expected, rel=1e-6)


def test_all_same_label_identical_embeddings_give_log_three() -> None:
    # 4 identical embeddings with one label: 3 equal candidates, all positives -> -log(1/3)
    z = torch.ones(2, 3)
    loss = info_nce_loss(z, z.clone(), 0.2, labels=torch.tensor([4, 4]))
    assert float(loss) == pytest.approx(math.log(3.0), rel=1e-6)


@pytest.mark.parametrize(("batch", "temperature", "use_labels"), [(3, 0.1, False), (5, 0.5, False), (6, 0.2, True)])
def test_matches_loop_implementation(batch: int, temperature: float, use_labels: bool) -> None:
    z_a, z_b = torch.randn(batch, 7, dtype=torch.float64), torch.randn(batch, 7, dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 2, 1, 0])[:batch] if use_labels else None
    loss = info_nce_loss(z_a, z_b, temperature, labels=labels)
    assert float(loss) == pytest.approx(_loop_reference(z_a, z_b, temperature, labels), rel=1e-10)


def test_unique_labels_reduce_to_nt_xent() -> None:
    z_a, z_b = torch.randn(5, 4), torch.randn(5, 4)
    supervised = info_nce_loss(z_a, z_b, 0.3, labels=torch.tensor([9, 3, 0, 1, 7]))
    torch.testing.assert_close(supervised, info_nce_loss(z_a, z_b, 0.3))


def test_invariant_to_embedding_scale() -> None:
    z_a, z_b = torch.randn(4, 8), torch.randn(4, 8)
    torch.testing.assert_close(info_nce_loss(z_a * 17.0, z_b * 0.01, 0.1), info_nce_loss(z_a, z_b, 0.1))


def test_decreases_as_positives_align() -> None:
    z_a, noise = torch.randn(8, 16), torch.randn(8, 16)
    losses = [float(info_nce_loss(z_a, alpha * z_a + (1 - alpha) * noise, 0.2)) for alpha in (0.0, 0.3, 0.6, 1.0)]
    assert losses == sorted(losses, reverse=True)
    assert losses[0] - losses[-1] > 1.0


def test_symmetric_in_views_and_module_matches() -> None:
    z_a, z_b = torch.randn(4, 8), torch.randn(4, 8)
    torch.testing.assert_close(info_nce_loss(z_a, z_b, 0.1), info_nce_loss(z_b, z_a, 0.1))
    torch.testing.assert_close(InfoNCELoss(temperature=0.1)(z_a, z_b), info_nce_loss(z_a, z_b, 0.1))


def test_gradients_are_finite_for_a_zero_embedding() -> None:
    z_a = torch.zeros(3, 4, requires_grad=True)
    info_nce_loss(z_a, torch.randn(3, 4), 0.1).backward()
    assert torch.isfinite(z_a.grad).all()


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match=r"z_a \(3, 4\) and z_b \(2, 4\)"):
        info_nce_loss(torch.randn(3, 4), torch.randn(2, 4), 0.1)
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        info_nce_loss(torch.randn(3, 4), torch.randn(3, 4), 0.0)
    with pytest.raises(ValueError, match=r"integer labels of shape \(3,\)"):
        info_nce_loss(torch.randn(3, 4), torch.randn(3, 4), 0.1, labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"integer labels of shape \(3,\)"):
        info_nce_loss(torch.randn(3, 4), torch.randn(3, 4), 0.1, labels=torch.tensor([0.0, 1.0, 2.0]))

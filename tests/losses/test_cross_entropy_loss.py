"""Classification and segmentation cross-entropy: hand-computed numbers for both reductions."""

from __future__ import annotations

import math

import pytest
import torch

from pretrainlab.losses.cross_entropy import (
    classification_cross_entropy,
    segmentation_cross_entropy,
)


def _segmentation_example() -> tuple[torch.Tensor, torch.Tensor]:
    # every pixel has logits (0, ln 3): p = (1/4, 3/4); labels 0, 1 and two ignored pixels
    logits = torch.tensor([0.0, math.log(3.0)]).view(1, 2, 1, 1).expand(1, 2, 2, 2).clone()
    label = torch.tensor([[[0, 1], [255, 255]]])
    return logits, label


def test_segmentation_mmseg_default_divides_by_all_pixels() -> None:
    logits, label = _segmentation_example()
    loss = segmentation_cross_entropy(logits, label, avg_non_ignore=False)
    assert float(loss) == pytest.approx((math.log(4.0) + math.log(4.0 / 3.0)) / 4, rel=1e-6)


def test_segmentation_avg_non_ignore_divides_by_valid_pixels() -> None:
    logits, label = _segmentation_example()
    loss = segmentation_cross_entropy(logits, label, avg_non_ignore=True)
    assert float(loss) == pytest.approx((math.log(4.0) + math.log(4.0 / 3.0)) / 2, rel=1e-6)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits, label, ignore_index=255))


@pytest.mark.parametrize("avg_non_ignore", [False, True])
def test_segmentation_all_ignored_is_zero_with_gradient(avg_non_ignore: bool) -> None:
    logits = torch.randn(2, 3, 4, 5, requires_grad=True)
    loss = segmentation_cross_entropy(logits, torch.full((2, 4, 5), 255), avg_non_ignore=avg_non_ignore)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_segmentation_custom_ignore_index() -> None:
    logits, label = _segmentation_example()
    label = torch.where(label == 255, torch.tensor(-1), label)
    loss = segmentation_cross_entropy(logits, label, ignore_index=-1, avg_non_ignore=False)
    assert float(loss) == pytest.approx((math.log(4.0) + math.log(4.0 / 3.0)) / 4, rel=1e-6)


def test_segmentation_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match=r"logits \(2, 3, 4, 4\) and label \(2, 5, 5\) disagree"):
        segmentation_cross_entropy(torch.zeros(2, 3, 4, 4), torch.zeros(2, 5, 5, dtype=torch.long), avg_non_ignore=True)
    with pytest.raises(ValueError, match=r"lie in \[0, 3\) or equal ignore_index=255, got min 0 and max 3"):
        segmentation_cross_entropy(torch.zeros(1, 3, 1, 2), torch.tensor([[[0, 3]]]), avg_non_ignore=True)
    with pytest.raises(ValueError, match=r"logits \(B, K, H, W\) and label \(B, H, W\)"):
        segmentation_cross_entropy(torch.zeros(3, 4, 4), torch.zeros(3, 4, 4, dtype=torch.long), avg_non_ignore=False)


def test_classification_label_smoothing_by_hand() -> None:
    # logits (ln 3, 0): p = (3/4, 1/4); smoothing 0.2 over K=2 gives target (0.9, 0.1)
    logits = torch.tensor([[math.log(3.0), 0.0]])
    loss = classification_cross_entropy(logits, torch.tensor([0]), label_smoothing=0.2)
    assert float(loss) == pytest.approx(-(0.9 * math.log(0.75) + 0.1 * math.log(0.25)), rel=1e-6)
    assert float(classification_cross_entropy(logits, torch.tensor([1]))) == pytest.approx(math.log(4.0), rel=1e-6)


def test_classification_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match=r"logits \(B, K\) and target \(B,\), got logits \(2, 3\) and target \(3,\)"):
        classification_cross_entropy(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"lie in \[0, 3\), got min 0 and max 5"):
        classification_cross_entropy(torch.zeros(2, 3), torch.tensor([0, 5]))
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\), got 1.0"):
        classification_cross_entropy(torch.zeros(2, 3), torch.tensor([0, 1]), label_smoothing=1.0)

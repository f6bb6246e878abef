"""Mask2Former's set-prediction loss: Hungarian matching against brute force, semantic targets,
point sampling, and the loss ordering perfect < shuffled."""

from __future__ import annotations

import itertools

import pytest
import torch

from pretrainlab.losses.mask2former import (
    Mask2FormerLoss,
    MaskTargets,
    hungarian_match,
    importance_points,
    pairwise_dice,
    pairwise_sigmoid_bce,
    point_sample,
    semantic_targets,
)


def brute_force_min_cost(cost: torch.Tensor) -> float:
    """Minimum total cost over every injective map of the T targets into the Q predictions."""
    num_queries, num_targets = cost.shape
    return min(
        sum(cost[q, t].item() for t, q in enumerate(rows))
        for rows in itertools.permutations(range(num_queries), num_targets)
    )


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("shape", [(2, 2), (4, 3), (5, 5), (6, 2), (6, 6)])
def test_hungarian_match_is_optimal_against_brute_force(shape: tuple[int, int], seed: int) -> None:
    cost = torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 10 - 3
    rows, cols = hungarian_match(cost)
    assert len(rows) == len(cols) == shape[1]
    assert len(set(rows.tolist())) == len(rows) and sorted(cols.tolist()) == list(range(shape[1]))
    assert cost[rows, cols].sum().item() == pytest.approx(brute_force_min_cost(cost), abs=1e-5)


def test_hungarian_match_rejects_non_finite_cost() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        hungarian_match(torch.tensor([[0.0, float("nan")], [1.0, 2.0]]))


def test_semantic_targets_one_mask_per_present_class_and_ignore_in_none() -> None:
    labels = torch.tensor([[[0, 0, 2], [255, 2, 2]], [[255, 255, 255], [255, 255, 255]]])
    first, empty = semantic_targets(labels, num_classes=3)
    assert first.classes.tolist() == [0, 2]
    torch.testing.assert_close(first.masks, torch.tensor([[[1.0, 1, 0], [0, 0, 0]], [[0, 0, 1], [0, 1, 1]]]))
    assert empty.classes.numel() == 0 and empty.masks.shape == (0, 2, 3)
    with pytest.raises(ValueError, match="must lie in"):
        semantic_targets(torch.full((1, 2, 2), 3), num_classes=3)


def test_point_sample_reads_pixel_centres_exactly() -> None:
    maps = torch.arange(12.0).view(1, 3, 4)
    coords = torch.tensor([[[0.5 / 4, 0.5 / 3], [3.5 / 4, 2.5 / 3], [1.5 / 4, 1.5 / 3]]])  # (x, y)
    torch.testing.assert_close(point_sample(maps, coords), torch.tensor([[0.0, 11.0, 5.0]]))


def test_importance_points_favour_the_uncertain_region() -> None:
    torch.manual_seed(0)
    logits = torch.full((1, 32, 32), 10.0)
    logits[:, :, 16:] = 0.0  # the right half is maximally uncertain
    points = importance_points(logits, num_points=400, oversample_ratio=3.0, importance_ratio=0.75)
    assert points.shape == (1, 400, 2)
    right = (points[0, :, 0] >= 0.5).float().mean().item()
    assert right > 0.8  # 0.75 by importance + about half of the 0.25 uniform ones


def test_pairwise_costs_match_their_elementwise_definitions() -> None:
    torch.manual_seed(0)
    logits, targets = torch.randn(3, 20), (torch.rand(2, 20) > 0.5).float()
    bce = pairwise_sigmoid_bce(logits, targets)
    dice = pairwise_dice(logits, targets)
    for q in range(3):
        for t in range(2):
            expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[q], targets[t])
            torch.testing.assert_close(bce[q, t], expected)
            p = logits[q].sigmoid()
            expected_dice = 1 - (2 * (p * targets[t]).sum() + 1) / (p.sum() + targets[t].sum() + 1)
            torch.testing.assert_close(dice[q, t], expected_dice)


NUM_CLASSES, NUM_QUERIES = 4, 6


def scene() -> list[MaskTargets]:
    labels = torch.zeros(2, 16, 16, dtype=torch.int64)
    labels[0, :, 8:] = 2
    labels[0, 12:, :4] = 255
    labels[1, :8] = 1
    labels[1, 8:, 8:] = 3
    return semantic_targets(labels, NUM_CLASSES)


def perfect_predictions(targets: list[MaskTargets], scale: float = 20.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Query t predicts target t's class and mask with large logits; the other queries predict no object."""
    class_logits = torch.full((len(targets), NUM_QUERIES, NUM_CLASSES + 1), -scale)
    class_logits[:, :, -1] = scale
    mask_logits = torch.full((len(targets), NUM_QUERIES, 16, 16), -scale)
    for b, target in enumerate(targets):
        for t, (cls, mask) in enumerate(zip(target.classes, target.masks)):
            class_logits[b, t] = -scale
            class_logits[b, t, cls] = scale
            mask_logits[b, t] = (2 * mask - 1) * scale
    return class_logits, mask_logits


@pytest.mark.parametrize("num_points", [None, 256])
def test_perfect_prediction_has_a_lower_loss_than_a_shuffled_one(num_points: int | None) -> None:
    torch.manual_seed(0)
    targets = scene()
    criterion = Mask2FormerLoss(NUM_CLASSES, num_points=num_points)
    class_logits, mask_logits = perfect_predictions(targets)
    shuffled = mask_logits[:, [1, 2, 0, 3, 4, 5]]  # masks rotated among the matched queries
    perfect_loss = criterion([class_logits] * 2, [mask_logits] * 2, targets)
    shuffled_loss = criterion([class_logits] * 2, [shuffled] * 2, targets)
    total = {name: sum(v for k, v in losses.items() if k.startswith("loss"))
             for name, losses in [("perfect", perfect_loss), ("shuffled", shuffled_loss)]}  # fmt: skip
    assert total["perfect"].item() < total["shuffled"].item() / 3
    if num_points is None:  # on points, importance sampling puts 3/4 of them on the (interpolated) mask edges
        assert total["perfect"].item() < 0.05
    assert set(perfect_loss) >= {"loss_cls", "loss_mask", "loss_dice"}


def test_matching_recovers_a_permutation_of_the_queries() -> None:
    torch.manual_seed(0)
    targets = scene()
    class_logits, mask_logits = perfect_predictions(targets, scale=5.0)
    order = torch.tensor([4, 0, 5, 2, 1, 3])  # query order[i] holds what query i held
    criterion = Mask2FormerLoss(NUM_CLASSES, num_points=128)
    for b, target in enumerate(targets):
        rows, cols = criterion.match(class_logits[b, order], mask_logits[b, order], target)
        inverse = torch.argsort(order)
        assert dict(zip(cols.tolist(), rows.tolist())) == {t: inverse[t].item() for t in range(len(target.classes))}


def test_no_object_weight_scales_the_unmatched_queries() -> None:
    targets = [MaskTargets(torch.zeros(0, dtype=torch.int64), torch.zeros(0, 8, 8))]
    class_logits = torch.zeros(1, NUM_QUERIES, NUM_CLASSES + 1)  # uniform: CE = log(C + 1) for every query
    mask_logits = torch.zeros(1, NUM_QUERIES, 8, 8, requires_grad=True)
    losses = Mask2FormerLoss(NUM_CLASSES, num_points=16)([class_logits], [mask_logits], targets)
    # every query targets "no object" (weight 0.1): the weighted mean is still log(C + 1), times class weight 2
    assert losses["loss_cls"].item() == pytest.approx(2.0 * torch.log(torch.tensor(5.0)).item(), rel=1e-5)
    assert losses["loss_mask"].item() == 0.0 and losses["loss_dice"].item() == 0.0
    (losses["loss_mask"] + losses["loss_dice"]).backward()  # connected, zero gradient, no NaN
    assert torch.equal(mask_logits.grad, torch.zeros_like(mask_logits))


def test_bad_inputs_raise() -> None:
    criterion = Mask2FormerLoss(NUM_CLASSES)
    targets = scene()
    class_logits, mask_logits = perfect_predictions(targets)
    with pytest.raises(ValueError, match="C \\+ no object"):
        criterion([class_logits[..., :-1]], [mask_logits], targets)
    with pytest.raises(ValueError, match="one class and one mask prediction per layer"):
        criterion([class_logits], [], targets)
    with pytest.raises(ValueError, match="targets for a batch"):
        criterion([class_logits], [mask_logits], targets[:1])

"""Mask2Former's set-prediction loss (Cheng et al. 2022, "Masked-attention Mask Transformer for
Universal Image Segmentation", arXiv:2112.01527, Sec. 3.3 and 4.1).

Each image has Q predictions (class logits over C classes + "no object", and a mask logit map)
and T targets (a class and a binary mask). A Hungarian matching (scipy's `linear_sum_assignment`)
pairs predictions with targets on the cost

    2.0 · (−p(target class)) + 5.0 · sigmoid BCE + 5.0 · dice,

the mask terms computed on K points drawn uniformly in [0, 1]², shared by prediction and target.
The loss is then, with the same weights, the class cross-entropy over all Q predictions
(unmatched ones target "no object", whose weight is 0.1) plus BCE and dice of the matched masks
on K points chosen by importance sampling (3K uniform candidates, the 0.75·K most uncertain —
|logit| smallest — plus 0.25·K uniform ones), or on every pixel of the prediction
(`num_points=None`). Mask terms are normalised by the number of targets in the batch
(all-reduced when `torch.distributed` is initialised).

Semantic targets: from a label map (H, W) with ignore index 255, one binary mask per class
present; ignored pixels belong to no mask (as the official semantic dataset mapper builds them).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from pretrainlab.distributed import all_reduce_mean



@dataclass(frozen=True)
class MaskTargets:
    """The targets of one image: classes (T,) int64 and masks (T, H, W) float in {0, 1}."""

    classes: Tensor
    masks: Tensor


def semantic_targets(labels: Tensor, num_classes: int, ignore_index: int = 255) -> list[MaskTargets]:
    """One binary mask per class present in each label map.

    Args:
        labels: (B, H, W) int64 class indices in [0, num_classes) or `ignore_index`.

    Returns:
        B `MaskTargets`, classes sorted ascending; ignored pixels are 0 in every mask.
    """
    if labels.ndim != 3:
        raise ValueError(f"labels must be (B, H, W), got shape {tuple(labels.shape)}")
    valid = labels != ignore_index
    if valid.any() and (labels[valid].min() < 0 or labels[valid].max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}) or be {ignore_index}")
    targets = []
    for label in labels:
        classes = torch.unique(label[label != ignore_index])  # (T,)
        masks = (label[None] == classes[:, None, None]).float()  # (T, H, W)
        targets.append(MaskTargets(classes.long(), masks))
    return targets


def point_sample(maps: Tensor, coords: Tensor) -> Tensor:
    """Bilinear values of maps (N, H, W) at points (N, K, 2) given as (x, y) in [0, 1]² -> (N, K).

    align_corners=False: (0, 0) is the top-left corner of the top-left pixel.
    """
    grid = 2.0 * coords[:, :, None, :] - 1.0  # (N, K, 1, 2)
    return F.grid_sample(maps[:, None], grid, mode="bilinear", align_corners=False)[:, 0, :, 0]  # (N, K)


def importance_points(
    mask_logits: Tensor, num_points: int, oversample_ratio: float = 3.0, importance_ratio: float = 0.75
) -> Tensor:
    """Points (N, K, 2) in [0, 1]² for mask logits (N, H, W) (PointRend, Kirillov et al. 2020):
    among `oversample_ratio`·K uniform candidates the `importance_ratio`·K with the smallest
    |logit| (the most uncertain), plus the rest drawn uniformly. No gradient."""
    num_masks = mask_logits.shape[0]
    device = mask_logits.device
    num_candidates = int(num_points * oversample_ratio)
    candidates = torch.rand(num_masks, num_candidates, 2, device=device)
    with torch.no_grad():
        uncertainty = -point_sample(mask_logits.detach().float(), candidates).abs()  # (N, 3K)
    num_uncertain = int(importance_ratio * num_points)
    index = uncertainty.topk(num_uncertain, dim=1).indices  # (N, K_u)
    chosen = torch.gather(candidates, 1, index[..., None].expand(-1, -1, 2))  # (N, K_u, 2)
    uniform = torch.rand(num_masks, num_points - num_uncertain, 2, device=device)
    return torch.cat([chosen, uniform], dim=1)  # (N, K, 2)


def pairwise_sigmoid_bce(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean sigmoid BCE over points of every (prediction, target) pair: (Q, K), (T, K) -> (Q, T)."""
    positive = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    negative = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (positive @ targets.T + negative @ (1.0 - targets).T) / logits.shape[1]


def pairwise_dice(logits: Tensor, targets: Tensor) -> Tensor:
    """Dice loss 1 − (2|p∩t| + 1) / (|p| + |t| + 1) of every pair: (Q, K), (T, K) -> (Q, T)."""
    probs = logits.sigmoid()
    numerator = 2.0 * probs @ targets.T
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1.0 - (numerator + 1.0) / (denominator + 1.0)


def hungarian_match(cost: Tensor) -> tuple[Tensor, Tensor]:
    """Minimum-cost assignment of a (Q, T) cost matrix (Q >= T): (prediction indices, target indices),
    each (min(Q, T),) int64, sorted by prediction index."""
    if not torch.isfinite(cost).all():
        raise ValueError("the matching cost has non-finite entries")
    rows, cols = linear_sum_assignment(cost.detach().cpu().numpy())
    return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)


@dataclass(frozen=True)
class Mask2FormerLossWeights:
    """The paper's weights (Sec. 4.1)."""

    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    no_object_weight: float = 0.1


def _num_masks(targets: list[MaskTargets], device: torch.device) -> float:
    """Targets in the batch, averaged over processes when distributed (as the reference), at least 1."""
    count = all_reduce_mean(torch.tensor(float(sum(len(t.classes) for t in targets)), device=device))
    return max(count.item(), 1.0)


class Mask2FormerLoss(nn.Module):
    """Matching + class CE + mask BCE + dice for every decoder layer's predictions (deep supervision).

    Args:
        num_classes: C (the class logits have C + 1 entries, the last is "no object").
        num_points: K points per mask for matching and loss; None = every pixel of the prediction.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        weights: Mask2FormerLossWeights = Mask2FormerLossWeights(),
        num_points: int | None = 12544,
        oversample_ratio: float = 3.0,
        importance_ratio: float = 0.75,
    ) -> None:
        super().__init__()
        if num_points is not None and num_points < 1:
            raise ValueError(f"num_points must be >= 1 or None, got {num_points}")
        if not 0.0 <= importance_ratio <= 1.0 or oversample_ratio < 1.0:
            raise ValueError(f"need 0 <= importance_ratio <= 1 and oversample_ratio >= 1, got "
                             f"{importance_ratio}, {oversample_ratio}")  # fmt: skip
        self.num_classes = num_classes
        self.weights = weights
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_ratio = importance_ratio
        class_weight = torch.ones(num_classes + 1)
        class_weight[-1] = weights.no_object_weight
        self.register_buffer("class_weight", class_weight, persistent=False)

    def _sample(self, pred: Tensor, target: Tensor, coords: Tensor | None) -> tuple[Tensor, Tensor]:
        """pred (N, h, w) logits and target (M, H, W) masks at points (N or 1, K, 2), or every pixel
        of the prediction (targets resized, bilinear) when coords is None -> (N, K), (M, K)."""
        if coords is None:
            resized = F.interpolate(target[None], size=pred.shape[-2:], mode="bilinear", align_corners=False)[0]
            return pred.flatten(1), resized.flatten(1)
        pred_points = point_sample(pred, coords.expand(pred.shape[0], -1, -1))
        target_points = point_sample(target, coords.expand(target.shape[0], -1, -1))  # per-mask or shared points
        return pred_points, target_points

    @torch.no_grad()
    def match(self, class_logits: Tensor, mask_logits: Tensor, targets: MaskTargets) -> tuple[Tensor, Tensor]:
        """Hungarian matching of one image: class_logits (Q, C+1), mask_logits (Q, h, w)."""
        if len(targets.classes) == 0:
            empty = torch.zeros(0, dtype=torch.int64)
            return empty, empty
        w = self.weights
        probs = class_logits.float().softmax(-1)  # (Q, C+1)
        cost_class = -probs[:, targets.classes]  # (Q, T)
        coords = None if self.num_points is None else torch.rand(1, self.num_points, 2, device=mask_logits.device)
        pred, target = self._sample(mask_logits.float(), targets.masks.float(), coords)  # (Q, K), (T, K)
        cost = w.class_weight * cost_class + w.mask_weight * pairwise_sigmoid_bce(pred, target)
        cost = cost + w.dice_weight * pairwise_dice(pred, target)
        return hungarian_match(cost)

    def layer_loss(
        self, class_logits: Tensor, mask_logits: Tensor, targets: list[MaskTargets], num_masks: float
    ) -> dict[str, Tensor]:
        """Loss of one layer's predictions: class_logits (B, Q, C+1), mask_logits (B, Q, h, w)."""
        class_logits, mask_logits = class_logits.float(), mask_logits.float()
        B, Q, _ = class_logits.shape
        device = class_logits.device
        matches = [self.match(c, m, t) for c, m, t in zip(class_logits, mask_logits, targets)]
        matches = [(rows.to(device), cols.to(device)) for rows, cols in matches]
        target_classes = torch.full((B, Q), self.num_classes, dtype=torch.int64, device=device)  # "no object"
        for b, ((rows, cols), target) in enumerate(zip(matches, targets)):
            target_classes[b, rows] = target.classes.to(device)[cols]
        loss_cls = F.cross_entropy(class_logits.transpose(1, 2), target_classes, weight=self.class_weight)
        pred = torch.cat([m[rows] for m, (rows, _) in zip(mask_logits, matches)])  # (N, h, w)
        if pred.shape[0] == 0:  # no target anywhere: mask terms are 0, still connected to the graph
            zero = mask_logits.sum() * 0.0
            return {"cls": loss_cls, "mask": zero, "dice": zero}
        target = torch.cat([t.masks.to(device)[cols] for t, (_, cols) in zip(targets, matches)]).float()  # (N, H, W)
        coords = None
        if self.num_points is not None:
            coords = importance_points(pred, self.num_points, self.oversample_ratio, self.importance_ratio)
        pred_points, target_points = self._sample(pred, target, coords)  # (N, K), (N, K)
        bce = F.binary_cross_entropy_with_logits(pred_points, target_points, reduction="none").mean(1)  # (N,)
        probs = pred_points.sigmoid()
        dice = 1.0 - (2.0 * (probs * target_points).sum(1) + 1.0) / (probs.sum(1) + target_points.sum(1) + 1.0)
        return {"cls": loss_cls, "mask": bce.sum() / num_masks, "dice": dice.sum() / num_masks}

    def forward(
        self, class_logits: list[Tensor], mask_logits: list[Tensor], targets: list[MaskTargets]
    ) -> dict[str, Tensor]:
        """Weighted losses summed over the layers' predictions.

        Args:
            class_logits: per layer (B, Q, C+1).
            mask_logits: per layer (B, Q, h, w).
            targets: B `MaskTargets` (masks at any resolution; sampled in normalised coordinates).

        Returns:
            `loss_cls`, `loss_mask`, `loss_dice` (weighted, summed over layers) and, for logging,
            `last_loss_cls` / `last_loss_mask` / `last_loss_dice` of the final layer (unweighted).
        """
        if len(class_logits) != len(mask_logits) or not class_logits:
            raise ValueError(f"need one class and one mask prediction per layer, got {len(class_logits)} and "
                             f"{len(mask_logits)}")  # fmt: skip
        if class_logits[0].shape[-1] != self.num_classes + 1:
            raise ValueError(f"class logits must have {self.num_classes + 1} entries (C + no object), "
                             f"got {class_logits[0].shape[-1]}")  # fmt: skip
        if len(targets) != class_logits[0].shape[0]:
            raise ValueError(f"{len(targets)} targets for a batch of {class_logits[0].shape[0]}")
        num_masks = _num_masks(targets, class_logits[0].device)
        w = self.weights
        total = {"cls": 0.0, "mask": 0.0, "dice": 0.0}
        layer: dict[str, Tensor] = {}
        for classes, masks in zip(class_logits, mask_logits):
            layer = self.layer_loss(classes, masks, targets, num_masks)
            total = {key: value + layer[key] for key, value in total.items()}
        return {
            "loss_cls": w.class_weight * total["cls"],
            "loss_mask": w.mask_weight * total["mask"],
            "loss_dice": w.dice_weight * total["dice"],
            **{f"last_loss_{key}": value.detach() for key, value in layer.items()},
        }


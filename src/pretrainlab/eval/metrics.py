"""Semantic segmentation metrics with MMSegmentation `IoUMetric` semantics.

Per-class pixel counts (intersection, union, predicted area, label area) are summed
over the whole evaluation set, and across ranks when distributed, before any ratio is
taken (not a per-image mean). Pixels whose label is `ignore_index` are dropped from
both prediction and label. Ratios that are 0/0 are NaN and skipped by the means:
a class absent from labels and predictions has IoU = Acc = NaN; predicted but absent
from labels: IoU = 0, Acc = NaN; in labels but never predicted: IoU = Acc = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from pretrainlab.distributed import all_reduce_sum


@dataclass(frozen=True)
class Areas:
    """Per-class pixel counts, each (C,) int64."""

    intersect: Tensor
    union: Tensor
    pred: Tensor
    label: Tensor


def intersect_and_union(pred: Tensor, label: Tensor, num_classes: int, ignore_index: int = 255) -> Areas:
    """Per-class intersection, union, predicted and label areas of one or more maps.

    Args:
        pred: (..., H, W) integer predictions in [0, C).
        label: same shape, integer labels in [0, C) or `ignore_index`.
        num_classes: C.
        ignore_index: label value dropped from both maps.

    Returns:
        `Areas` of (C,) int64 counts.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    pred = torch.as_tensor(pred)
    label = torch.as_tensor(label)
    if pred.shape != label.shape:
        raise ValueError(f"pred and label must have the same shape, got {tuple(pred.shape)} and {tuple(label.shape)}")
    if pred.is_floating_point() or label.is_floating_point():
        raise ValueError(f"pred and label must be integer maps, got dtypes {pred.dtype} and {label.dtype}")
    valid = label != ignore_index
    pred = pred[valid].long()  # (P,) valid pixels only
    label = label[valid].long()  # (P,)
    for name, values in (("pred", pred), ("label", label)):
        if values.numel() > 0 and (int(values.min()) < 0 or int(values.max()) >= num_classes):
            raise ValueError(
                f"{name} values (outside ignore_index={ignore_index} pixels) must lie in [0, {num_classes}), "
                f"got min {int(values.min())} and max {int(values.max())}"
            )
    confusion = torch.bincount(label * num_classes + pred, minlength=num_classes * num_classes)
    confusion = confusion.view(num_classes, num_classes)  # (C_label, C_pred)
    intersect = confusion.diagonal().clone()
    area_label = confusion.sum(dim=1)
    area_pred = confusion.sum(dim=0)
    return Areas(intersect, area_pred + area_label - intersect, area_pred, area_label)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator in float64 with NaN where the denominator is 0."""
    out = np.full(numerator.shape, np.nan, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _nanmean(values: np.ndarray) -> float:
    """Mean of the non-NaN entries; NaN when all are NaN (no RuntimeWarning)."""
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


class SegmentationMetric:
    """Accumulates per-class areas over an evaluation set (MMSeg `IoUMetric`).

    Args:
        num_classes: C.
        ignore_index: label value excluded from every count.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        """Zero all counts."""
        zeros = torch.zeros(self.num_classes, dtype=torch.int64)
        self._areas = Areas(zeros.clone(), zeros.clone(), zeros.clone(), zeros.clone())

    def update(self, pred: Tensor, label: Tensor) -> None:
        """Add one map (H, W) or a batch (B, H, W) of integer predictions and labels."""
        if torch.as_tensor(pred).ndim not in (2, 3):
            raise ValueError(f"expected pred (H, W) or (B, H, W), got shape {tuple(torch.as_tensor(pred).shape)}")
        areas = intersect_and_union(pred, label, self.num_classes, self.ignore_index)
        self._areas = Areas(
            self._areas.intersect + areas.intersect.cpu(),
            self._areas.union + areas.union.cpu(),
            self._areas.pred + areas.pred.cpu(),
            self._areas.label + areas.label.cpu(),
        )

    def areas(self, sync: bool = True) -> Areas:
        """The accumulated counts, summed over ranks when `sync` and distributed (state unchanged)."""
        stacked = torch.stack([self._areas.intersect, self._areas.union, self._areas.pred, self._areas.label])
        if sync:
            stacked = all_reduce_sum(stacked)  # (4, C)
        return Areas(*stacked.unbind(0))

    def compute(self, sync: bool = True) -> dict[str, float | np.ndarray]:
        """Ratios as fractions: `aAcc`, `mIoU`, `mAcc` (floats), per-class `IoU`, `Acc` ((C,) float64,
        NaN for 0/0) and the summed `area_intersect`, `area_union`, `area_pred_label`, `area_label`
        ((C,) int64). With `sync`, every rank must call it (the areas are all-reduced)."""
        areas = self.areas(sync)
        intersect = areas.intersect.numpy()
        label = areas.label.numpy()
        iou = _ratio(intersect, areas.union.numpy())
        acc = _ratio(intersect, label)
        total_label = label.sum()
        return {
            "aAcc": float(intersect.sum() / total_label) if total_label > 0 else float("nan"),
            "mIoU": _nanmean(iou),
            "mAcc": _nanmean(acc),
            "IoU": iou,
            "Acc": acc,
            "area_intersect": intersect,
            "area_union": areas.union.numpy(),
            "area_pred_label": areas.pred.numpy(),
            "area_label": label,
        }

    def summary(self, sync: bool = True) -> dict[str, float | np.ndarray]:
        """What MMSeg prints: `aAcc`, `mIoU`, `mAcc` and per-class `IoU`, `Acc` as
        round(value * 100, 2), NaN kept."""
        metrics = self.compute(sync)
        means = {key: float(np.round(metrics[key] * 100, 2)) for key in ("aAcc", "mIoU", "mAcc")}
        per_class = {key: np.round(metrics[key] * 100, 2) for key in ("IoU", "Acc")}
        return means | per_class

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


# Bins of the one-pass count ((ignore_index + 3) x (C + 2) int64, 8 MiB at most); past it, or when
# ignore_index < C, the masked path runs.
MAX_ONE_PASS_BINS = 1 << 20
_NARROW_INTEGERS = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32)  # exact in int32


class _IndexBuffer:
    """Reusable int32 scratch for the one-pass index of a map, grown on demand: allocating 2 x 1.4 MB per
    512 x 683 map costs about as much in page faults as the arithmetic itself."""

    def __init__(self) -> None:
        self._buffer: Tensor | None = None

    def get(self, numel: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """Two (numel,) int32 views."""
        if self._buffer is None or self._buffer.shape[1] < numel or self._buffer.device != device:
            self._buffer = torch.empty((2, numel), dtype=torch.int32, device=device)
        return self._buffer[0, :numel], self._buffer[1, :numel]


def _check_maps(pred: Tensor, label: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    pred = torch.as_tensor(pred)
    label = torch.as_tensor(label)
    if pred.shape != label.shape:
        raise ValueError(f"pred and label must have the same shape, got {tuple(pred.shape)} and {tuple(label.shape)}")
    if pred.is_floating_point() or label.is_floating_point():
        raise ValueError(f"pred and label must be integer maps, got dtypes {pred.dtype} and {label.dtype}")
    return pred, label


def _clamp_to_int32(values: Tensor, low: int, high: int, out: Tensor) -> None:
    """out (int32) = values clamped to [low, high]: one pass over `values` (clamped before narrowing, so a wide
    value never wraps)."""
    if values.dtype in _NARROW_INTEGERS:
        out.copy_(values)
        out.clamp_(low, high)
    elif values.device.type == "cpu":  # numpy clips int64 straight into int32; torch's clamp has no such out
        lowest = low if values.dtype.is_signed else 0  # numpy refuses a negative bound for unsigned arrays
        np.clip(values.contiguous().numpy(), lowest, high, out=out.numpy(), casting="unsafe")
    else:
        out.copy_(values.clamp(low, high))


def _confusion_one_pass(
    pred: Tensor, label: Tensor, num_classes: int, ignore_index: int, buffer: _IndexBuffer
) -> Tensor | None:
    """(C, C) counts from one `bincount` over every pixel; None when a value is out of range (the masked path
    then sorts out which pixels matter and raises if one does).

    Labels are clamped to [-1, ignore_index + 1] and predictions to [-1, C] (so -1 stands for every negative
    value, ignore_index + 1 for every label above it, C for every prediction >= C) and counted in bins
    (label + 1) x (C + 2) + (pred + 1): no mask, no copy of the valid pixels, no per-class loop, no range
    check beyond the clamp. The map is valid when every pixel landed in the (C, C) block of valid labels and
    predictions or in the ignored label's row. The index is int32 ((ignore_index + 3) x (C + 2) <= 2^20),
    which halves `bincount`'s reads.
    """
    width = num_classes + 2  # predictions -1, 0 .. C - 1, C
    pred, label = pred.reshape(-1), label.reshape(-1)  # (P,) every pixel
    index, pred_index = buffer.get(pred.numel(), pred.device)
    _clamp_to_int32(label, -1, ignore_index + 1, index)
    _clamp_to_int32(pred, -1, num_classes, pred_index)
    torch.add(pred_index, index, alpha=width, out=index)
    index.add_(width + 1)  # (label + 1) * width + (pred + 1) >= 0
    counts = torch.bincount(index, minlength=(ignore_index + 3) * width).view(ignore_index + 3, width)
    confusion = counts[1 : num_classes + 1, 1 : num_classes + 1]  # labels and predictions 0 .. C - 1
    if int(confusion.sum()) + int(counts[ignore_index + 1].sum()) != pred.numel():
        return None  # some pixel has a label outside [0, C) other than ignore_index, or a prediction outside
    return confusion.contiguous()


def _confusion_masked(pred: Tensor, label: Tensor, num_classes: int, ignore_index: int) -> Tensor:
    """(C, C) counts of the non-ignored pixels, selected by a mask; raises on values out of range."""
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
    return confusion.view(num_classes, num_classes)


def confusion_matrix(pred: Tensor, label: Tensor, num_classes: int, ignore_index: int = 255) -> Tensor:
    """Pixel counts per (label class, predicted class) of one or more maps.

    Args:
        pred: (..., H, W) integer predictions in [0, C) (any integer dtype; uint8 is the cheapest).
        label: same shape, integer labels in [0, C) or `ignore_index`.
        num_classes: C.
        ignore_index: label value dropped from both maps.

    Returns:
        (C_label, C_pred) int64 counts.
    """
    return _confusion(pred, label, num_classes, ignore_index, _IndexBuffer())


def _confusion(pred: Tensor, label: Tensor, num_classes: int, ignore_index: int, buffer: _IndexBuffer) -> Tensor:
    """`confusion_matrix` with a caller's index buffer."""
    pred, label = _check_maps(pred, label, num_classes)
    if pred.numel() > 0 and num_classes <= ignore_index and (ignore_index + 3) * (num_classes + 2) <= MAX_ONE_PASS_BINS:
        confusion = _confusion_one_pass(pred, label, num_classes, ignore_index, buffer)
        if confusion is not None:
            return confusion
    return _confusion_masked(pred, label, num_classes, ignore_index)


def _areas(confusion: Tensor) -> Areas:
    """`Areas` of a (C_label, C_pred) confusion matrix."""
    intersect = confusion.diagonal().clone()
    area_label = confusion.sum(dim=1)
    area_pred = confusion.sum(dim=0)
    return Areas(intersect, area_pred + area_label - intersect, area_pred, area_label)


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
    return _areas(confusion_matrix(pred, label, num_classes, ignore_index))


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
        self._buffer = _IndexBuffer()
        self.reset()

    def reset(self) -> None:
        """Zero all counts."""
        self._confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)  # (C_label, C_pred)

    def update(self, pred: Tensor, label: Tensor) -> None:
        """Add one map (H, W) or a batch (B, H, W) of integer predictions and labels."""
        if torch.as_tensor(pred).ndim not in (2, 3):
            raise ValueError(f"expected pred (H, W) or (B, H, W), got shape {tuple(torch.as_tensor(pred).shape)}")
        self._confusion += _confusion(pred, label, self.num_classes, self.ignore_index, self._buffer).cpu()

    def areas(self, sync: bool = True) -> Areas:
        """The accumulated counts, summed over ranks when `sync` and distributed (state unchanged)."""
        areas = _areas(self._confusion)
        stacked = torch.stack([areas.intersect, areas.union, areas.pred, areas.label])
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

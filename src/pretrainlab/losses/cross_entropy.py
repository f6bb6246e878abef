"""Cross-entropy for classification and for semantic segmentation with an ignore index.

Segmentation reductions, made explicit (MMSegmentation `CrossEntropyLoss`):
* `avg_non_ignore=False` (MMSeg's default): the sum of the per-pixel losses over the
  non-ignored pixels divided by ALL pixels (ignored pixels count as 0 in the mean).
* `avg_non_ignore=True` (PyTorch's `reduction="mean"`): the same sum divided by the
  number of non-ignored pixels.
A label map that is entirely ignored gives a loss of 0 that is still connected to the
logits (zero gradient), never NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def classification_cross_entropy(logits: Tensor, target: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy of class logits, optionally with label smoothing (Szegedy et al. 2016).

    Args:
        logits: (B, K) class scores.
        target: (B,) integer class indices in [0, K).
        label_smoothing: epsilon in [0, 1): the target is (1 - eps) one-hot + eps / K uniform.

    Returns:
        Scalar mean loss over the batch.
    """
    if logits.ndim != 2 or target.shape != (logits.shape[0],):
        raise ValueError(
            f"expected logits (B, K) and target (B,), got logits {tuple(logits.shape)} and target {tuple(target.shape)}"
        )
    if target.is_floating_point():
        raise ValueError(f"target must hold integer class indices, got dtype {target.dtype}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    num_classes = logits.shape[1]
    if target.numel() > 0 and (int(target.min()) < 0 or int(target.max()) >= num_classes):
        raise ValueError(
            f"target values must lie in [0, {num_classes}), got min {int(target.min())} and max {int(target.max())}"
        )
    return F.cross_entropy(logits, target, label_smoothing=label_smoothing)


def segmentation_cross_entropy(
    logits: Tensor,
    label: Tensor,
    *,
    ignore_index: int = 255,
    avg_non_ignore: bool,
) -> Tensor:
    """Per-pixel cross-entropy with an ignore index and an explicit reduction.

    Args:
        logits: (B, K, H, W) class scores, already at the label resolution.
        label: (B, H, W) integer labels in [0, K) or `ignore_index`.
        ignore_index: label value that contributes no loss.
        avg_non_ignore: divide by the non-ignored pixel count (True, PyTorch's mean) or by
            all B*H*W pixels (False, MMSeg's default).

    Returns:
        Scalar loss; 0 (with a zero gradient) when every pixel is ignored.
    """
    if logits.ndim != 4 or label.ndim != 3:
        raise ValueError(
            f"expected logits (B, K, H, W) and label (B, H, W), got logits {tuple(logits.shape)} "
            f"and label {tuple(label.shape)}"
        )
    if (logits.shape[0], *logits.shape[2:]) != tuple(label.shape):
        raise ValueError(
            f"logits {tuple(logits.shape)} and label {tuple(label.shape)} disagree in B, H or W; "
            "resize the logits to the label size first"
        )
    if label.is_floating_point():
        raise ValueError(f"label must be an integer map, got dtype {label.dtype}")
    num_classes = logits.shape[1]
    valid = label != ignore_index  # (B, H, W)
    if valid.any():
        valid_labels = label[valid]
        if int(valid_labels.min()) < 0 or int(valid_labels.max()) >= num_classes:
            raise ValueError(
                f"label values must lie in [0, {num_classes}) or equal ignore_index={ignore_index}, got min "
                f"{int(valid_labels.min())} and max {int(valid_labels.max())}"
            )
    per_pixel = F.cross_entropy(logits, label.long(), ignore_index=ignore_index, reduction="none")  # (B, H, W)
    if avg_non_ignore:
        denominator = valid.sum().clamp(min=1)
    else:
        denominator = torch.tensor(max(label.numel(), 1), device=logits.device)
    return per_pixel.sum() / denominator

"""Whole-image and sliding-window segmentation inference (MMSegmentation 1.2.2 semantics).

Sliding window (`EncoderDecoder.slide_inference`): a grid of
`max(H − crop_h + stride_h − 1, 0) // stride_h + 1` rows (columns likewise); window
(i, j) starts at (i·stride_h, j·stride_w), ends at min(start + crop, size), and its start is
pulled back to max(end − crop, 0) so the last window is flush with the border. An image
smaller than the crop gets one window covering it, no padding. Logits of overlapping
windows are summed and divided by the per-pixel window count.

`predict_fn` maps an image batch (B, C, h, w) to logits (B, K, h', w'); logits at a lower
resolution (e.g. stride-16 features) are resized bilinearly (align_corners=False) to the
window size, as MMSeg's `encode_decode` does.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

PredictFn = Callable[[torch.Tensor], torch.Tensor]


def slide_windows(
    height: int, width: int, crop: tuple[int, int], stride: tuple[int, int]
) -> list[tuple[int, int, int, int]]:
    """Half-open windows (y1, y2, x1, x2) in MMSeg's visiting order (rows outer, columns inner)."""
    crop_h, crop_w = crop
    stride_h, stride_w = stride
    if min(crop_h, crop_w, stride_h, stride_w) <= 0:
        raise ValueError(f"crop and stride must be positive (h, w) pairs, got crop={crop}, stride={stride}")
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {(height, width)}")
    num_rows = max(height - crop_h + stride_h - 1, 0) // stride_h + 1
    num_cols = max(width - crop_w + stride_w - 1, 0) // stride_w + 1
    windows = []
    for row in range(num_rows):
        y2 = min(row * stride_h + crop_h, height)
        y1 = max(y2 - crop_h, 0)
        for col in range(num_cols):
            x2 = min(col * stride_w + crop_w, width)
            x1 = max(x2 - crop_w, 0)
            windows.append((y1, y2, x1, x2))
    return windows


def resize_logits_to(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (align_corners=False) resize of (B, K, h, w) logits to `size = (H, W)`; no-op if equal."""
    if logits.ndim != 4:
        raise ValueError(f"logits must be (B, K, H, W), got shape {tuple(logits.shape)}")
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def _predict(predict_fn: PredictFn, images: torch.Tensor, num_classes: int | None) -> torch.Tensor:
    logits = predict_fn(images)
    if logits.ndim != 4 or logits.shape[0] != images.shape[0]:
        raise ValueError(
            f"predict_fn must return (B, K, h, w) logits for a batch of {images.shape[0]}, got {tuple(logits.shape)}"
        )
    if num_classes is not None and logits.shape[1] != num_classes:
        raise ValueError(f"predict_fn returned {logits.shape[1]} channels, expected num_classes={num_classes}")
    return resize_logits_to(logits, tuple(images.shape[-2:]))


def whole_inference(predict_fn: PredictFn, image: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """Logits (B, K, H, W) of the whole (B, C, H, W) image batch in one call, resized to (H, W)."""
    if image.ndim != 4:
        raise ValueError(f"image must be (B, C, H, W), got shape {tuple(image.shape)}")
    return _predict(predict_fn, image, num_classes)


def slide_inference(
    predict_fn: PredictFn,
    image: torch.Tensor,
    num_classes: int,
    crop: tuple[int, int],
    stride: tuple[int, int],
    windows_per_call: int = 1,
) -> torch.Tensor:
    """Sliding-window logits (B, K, H, W) for an image batch (B, C, H, W), averaged over overlaps.

    Args:
        predict_fn: (b, C, h, w) → (b, K, h', w') logits.
        image: (B, C, H, W) normalised images.
        num_classes: K, checked against `predict_fn`'s output.
        crop, stride: window size and step as (h, w).
        windows_per_call: windows stacked along the batch dimension per `predict_fn` call
            (all windows of one image share a shape, so this only changes speed / memory).
    """
    if image.ndim != 4:
        raise ValueError(f"image must be (B, C, H, W), got shape {tuple(image.shape)}")
    if windows_per_call <= 0:
        raise ValueError(f"windows_per_call must be positive, got {windows_per_call}")
    batch, _, height, width = image.shape
    windows = slide_windows(height, width, crop, stride)
    logits_sum = image.new_zeros(batch, num_classes, height, width)  # (B, K, H, W)
    count = image.new_zeros(1, 1, height, width)
    for start in range(0, len(windows), windows_per_call):
        group = windows[start : start + windows_per_call]
        crops = torch.cat([image[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in group])  # (n·B, C, h, w)
        logits = _predict(predict_fn, crops, num_classes).to(logits_sum.dtype)
        for k, (y1, y2, x1, x2) in enumerate(group):
            logits_sum[:, :, y1:y2, x1:x2] += logits[k * batch : (k + 1) * batch]
            count[:, :, y1:y2, x1:x2] += 1
    return logits_sum / count

"""Random crop with a cap on the dominant class ("cat_max_ratio"), MMSegmentation semantics.

Follows MMSegmentation 1.2.2 `RandomCrop(crop_size, cat_max_ratio, ignore_index=255)`:

* a box is drawn with `offset_h = randint(0, max(H − crop_h, 0) + 1)`, then
  `offset_w = randint(0, max(W − crop_w, 0) + 1)` (upper bounds exclusive); an image
  smaller than the crop in a dimension is kept whole in that dimension (no padding here —
  padding is done per batch, see `seg_collate.pad_batch`);
* when `cat_max_ratio < 1`, up to 10 times: the label crop is accepted if it holds more than
  one non-ignored class and the largest class count / the non-ignored pixel count is
  `< cat_max_ratio`; otherwise a new box is drawn. After 10 rejections the box drawn last
  (the 11th, never checked) is kept.

So the random stream consumes 2 draws for the first box and 2 more per rejection.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

MAX_CROP_ATTEMPTS = 10


class CropBox(NamedTuple):
    """Half-open crop window `[y1, y2) × [x1, x2)`, already clipped to the image."""

    y1: int
    y2: int
    x1: int
    x2: int


def sample_crop_box(rng: np.random.Generator, height: int, width: int, crop_size: tuple[int, int]) -> CropBox:
    """Draw one crop box of `crop_size = (crop_h, crop_w)` uniformly inside a `height × width` image.

    Consumes two `rng.integers` draws: the row offset first, then the column offset.
    """
    crop_h, crop_w = crop_size
    if crop_h <= 0 or crop_w <= 0:
        raise ValueError(f"crop_size must be positive (h, w), got {crop_size!r}")
    offset_h = int(rng.integers(0, max(height - crop_h, 0) + 1))
    offset_w = int(rng.integers(0, max(width - crop_w, 0) + 1))
    return CropBox(offset_h, min(offset_h + crop_h, height), offset_w, min(offset_w + crop_w, width))


def crop(array: np.ndarray, box: CropBox) -> np.ndarray:
    """View of `array` (H, W, ...) inside `box` (no copy)."""
    return array[box.y1 : box.y2, box.x1 : box.x2]


def class_counts(label: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """Pixel count per class value 0..255 of a uint8 (H, W) label, with `ignore_index` zeroed."""
    if label.dtype != np.uint8 or label.ndim != 2:
        raise ValueError(f"label must be a uint8 (H, W) array, got {label.dtype} of shape {label.shape}")
    if min(label.strides) < 0:  # cv2 reads positive-stride views only (e.g. not a flipped view)
        label = np.ascontiguousarray(label)
    # calcHist counts exactly in float32 below 2**24 pixels and reads strided views without a copy.
    if label.size >= 1 << 24:
        counts = np.bincount(label.ravel(), minlength=256)
    else:
        counts = cv2.calcHist([label], [0], None, [256], [0, 256]).ravel().astype(np.int64)
    if 0 <= ignore_index < 256:
        counts[ignore_index] = 0
    return counts


def is_crop_acceptable(label_crop: np.ndarray, cat_max_ratio: float, ignore_index: int = 255) -> bool:
    """True when the crop has > 1 non-ignored class and max class count / non-ignored count < cat_max_ratio."""
    counts = class_counts(label_crop, ignore_index)
    present = counts[counts > 0]
    if present.size <= 1:
        return False
    return bool(present.max() / present.sum() < cat_max_ratio)


def choose_crop_box(
    label: np.ndarray,
    rng: np.random.Generator,
    crop_size: tuple[int, int],
    cat_max_ratio: float = 0.75,
    ignore_index: int = 255,
) -> CropBox:
    """Draw crop boxes on the (H, W) label until one passes `is_crop_acceptable` (MMSeg's retry rule)."""
    height, width = label.shape[:2]
    box = sample_crop_box(rng, height, width, crop_size)
    if cat_max_ratio >= 1.0:
        return box
    for _ in range(MAX_CROP_ATTEMPTS):
        if is_crop_acceptable(crop(label, box), cat_max_ratio, ignore_index):
            break
        box = sample_crop_box(rng, height, width, crop_size)
    return box


def random_crop(
    image: np.ndarray,
    label: np.ndarray,
    rng: np.random.Generator,
    crop_size: tuple[int, int] = (512, 512),
    cat_max_ratio: float = 0.75,
    ignore_index: int = 255,
) -> tuple[np.ndarray, np.ndarray]:
    """Crop `image` (H, W, C) and `label` (H, W) with a box from `choose_crop_box` (views, no copy)."""
    if label.shape[:2] != image.shape[:2]:
        raise ValueError(f"label shape {label.shape[:2]} does not match image shape {image.shape[:2]}")
    box = choose_crop_box(label, rng, crop_size, cat_max_ratio, ignore_index)
    return crop(image, box), crop(label, box)

"""Aspect-preserving (random) resize of an image and its label map, MMSegmentation semantics.

Follows mmcv 2.1.0's `RandomResize(scale, ratio_range, keep_ratio=True)` as used by the
MMSegmentation 1.x ADE20k / Cityscapes configs:

1. draw `ratio = u·(max − min) + min` with `u ~ U[0, 1)`;
2. target scale = `(int(scale_w·ratio), int(scale_h·ratio))` (truncated);
3. rescale factor = min(max(target)/max(w, h), min(target)/min(w, h)) — the long side fits
   the longer target edge and the short side the shorter, whatever the orientation;
4. new size = `(int(w·f + 0.5), int(h·f + 0.5))`;
5. the image is resized with `cv2.INTER_LINEAR` (mmcv's 'bilinear'), the label with
   `cv2.INTER_NEAREST` (mmcv's 'nearest'), both to the same new size.

Images are HWC uint8 (BGR or any channel order — resize does not care), labels HW uint8.
"""

from __future__ import annotations

import cv2
import numpy as np

# mmcv's `imresize` maps 'bilinear' -> cv2.INTER_LINEAR and 'nearest' -> cv2.INTER_NEAREST
# (not the *_EXACT variants); both differ bit-wise from the exact variants.
IMAGE_INTERPOLATION = cv2.INTER_LINEAR
LABEL_INTERPOLATION = cv2.INTER_NEAREST


def _check_pair(name: str, value: tuple[float, float]) -> None:
    if len(value) != 2 or min(value) <= 0:
        raise ValueError(f"{name} must be two positive numbers, got {value!r}")


def rescale_factor(width: int, height: int, scale: tuple[int, int]) -> float:
    """Keep-ratio factor min(max(scale)/max(w, h), min(scale)/min(w, h)) (mmcv `rescale_size`).

    The long image side fits `max(scale)` and the short side `min(scale)`, whichever bound
    is tighter, independently of the orientation of `scale` and of the image.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got width={width}, height={height}")
    _check_pair("scale", scale)
    return min(max(scale) / max(width, height), min(scale) / min(width, height))


def rescale_size(width: int, height: int, scale: tuple[int, int]) -> tuple[int, int]:
    """New (w, h) of a keep-ratio resize of a `width × height` image to fit `scale`.

    Returns `(int(w·f + 0.5), int(h·f + 0.5))` with f = `rescale_factor(width, height, scale)`.
    """
    factor = rescale_factor(width, height, scale)
    return int(width * factor + 0.5), int(height * factor + 0.5)


def sample_resize_scale(
    rng: np.random.Generator, scale: tuple[int, int] = (2048, 512), ratio_range: tuple[float, float] = (0.5, 2.0)
) -> tuple[int, int]:
    """Draw the target scale of `RandomResize`: `(int(scale[0]·r), int(scale[1]·r))`, r ∈ [min, max).

    Consumes exactly one `rng.random()` draw.
    """
    _check_pair("scale", scale)
    low, high = ratio_range
    if not 0 < low <= high:
        raise ValueError(f"ratio_range must satisfy 0 < min <= max, got {ratio_range!r}")
    ratio = rng.random() * (high - low) + low
    return int(scale[0] * ratio), int(scale[1] * ratio)


def resize_image(image: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W, C) or (H, W) uint8 image to `size_wh = (w, h)` with cv2 bilinear."""
    return cv2.resize(image, size_wh, interpolation=IMAGE_INTERPOLATION)


def resize_label(label: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W) uint8 label map to `size_wh = (w, h)` with cv2 nearest."""
    return cv2.resize(label, size_wh, interpolation=LABEL_INTERPOLATION)


def resize_keep_ratio(
    image: np.ndarray, label: np.ndarray | None, scale: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Deterministic core: keep-ratio resize of `image` (H, W, C) and optional `label` (H, W).

    Returns the resized image and label (None when `label` is None), both of the size
    given by `rescale_size`.
    """
    height, width = image.shape[:2]
    if label is not None and label.shape[:2] != (height, width):
        raise ValueError(f"label shape {label.shape[:2]} does not match image shape {(height, width)}")
    size_wh = rescale_size(width, height, scale)
    if size_wh == (width, height):
        return image, label
    new_label = None if label is None else resize_label(label, size_wh)
    return resize_image(image, size_wh), new_label


def random_resize(
    image: np.ndarray,
    label: np.ndarray,
    rng: np.random.Generator,
    scale: tuple[int, int] = (2048, 512),
    ratio_range: tuple[float, float] = (0.5, 2.0),
) -> tuple[np.ndarray, np.ndarray]:
    """`sample_resize_scale` then `resize_keep_ratio` (MMSeg `RandomResize`, keep_ratio=True)."""
    target = sample_resize_scale(rng, scale, ratio_range)
    new_image, new_label = resize_keep_ratio(image, label, target)
    assert new_label is not None
    return new_image, new_label

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

Speed: a training crop keeps a fraction of the resized image, and `resize_image_region`
resizes only the part of the source the crop depends on, bit for bit equal to resizing all
of it and cropping (see its docstring for why).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

# mmcv's `imresize` maps 'bilinear' -> cv2.INTER_LINEAR and 'nearest' -> cv2.INTER_NEAREST
# (not the *_EXACT variants); both differ bit-wise from the exact variants.
IMAGE_INTERPOLATION = cv2.INTER_LINEAR
LABEL_INTERPOLATION = cv2.INTER_NEAREST

# Extra destination columns resized past a region's right edge: OpenCV's vertical bilinear
# pass finishes each row with scalar code that rounds differently from its SIMD body, so the
# last (at most one 512-bit vector of int16, 32 values ≈ 11 BGR pixels) columns of a row
# depend on where the row ends.
_REGION_COLUMN_MARGIN = 32
# Extra source pixels past the last one a region reads: bilinear reads pixels sx and sx + 1,
# and OpenCV clamps sx + 1 at the source edge, which must not be the edge of the view.
_REGION_SOURCE_MARGIN = 2


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


def _keep_channel_axis(resized: np.ndarray, like: np.ndarray) -> np.ndarray:
    """cv2.resize returns (h, w) for an (H, W, 1) input: put the channel axis back."""
    return resized[:, :, None] if like.ndim == 3 and resized.ndim == 2 else resized


def resize_image(image: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W, C) or (H, W) uint8 image to `size_wh = (w, h)` with cv2 bilinear; the dimensions are kept."""
    return _keep_channel_axis(cv2.resize(image, size_wh, interpolation=IMAGE_INTERPOLATION), image)


def resize_label(label: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W) uint8 label map to `size_wh = (w, h)` with cv2 nearest."""
    return cv2.resize(label, size_wh, interpolation=LABEL_INTERPOLATION)


def resize_image_region(
    image: np.ndarray, size_wh: tuple[int, int], box: tuple[int, int, int, int]
) -> np.ndarray:
    """`resize_image(image, size_wh)[y1:y2, x1:x2]` for `box = (y1, y2, x1, x2)`, bit for bit, cheaper.

    OpenCV maps destination pixel d to source coordinate (d + 0.5) · s − 0.5, with s the
    source / destination size ratio, and computes every destination pixel from that
    coordinate alone. Resizing a top-left view of the source with the same scale factors
    (`fx = w' / w`, `fy = h' / h`, the very doubles `cv2.resize` derives from `size_wh`)
    therefore gives the same pixels, as long as the view reaches `_REGION_SOURCE_MARGIN`
    source pixels past what the box reads and `_REGION_COLUMN_MARGIN` destination columns
    past its right edge. Only the rows and columns up to the box's bottom-right corner are
    computed. `box` is half-open and inside the resized image (e.g. a `seg_crop.CropBox`).

    Returns an (y2 − y1, x2 − x1, C) uint8 array (a view of the input when the size is unchanged).
    """
    height, width = image.shape[:2]
    y1, y2, x1, x2 = box
    new_w, new_h = size_wh
    if not (0 <= y1 <= y2 <= new_h and 0 <= x1 <= x2 <= new_w):
        raise ValueError(f"box {tuple(box)} (y1, y2, x1, x2) lies outside the resized size (w, h) = {size_wh}")
    if size_wh == (width, height):
        return image[y1:y2, x1:x2]
    fx, fy = new_w / width, new_h / height
    source_w = min(width, math.ceil((x2 + _REGION_COLUMN_MARGIN + 0.5) / fx) + _REGION_SOURCE_MARGIN)
    source_h = min(height, math.ceil((y2 + 0.5) / fy) + _REGION_SOURCE_MARGIN)
    # With dsize None, OpenCV keeps fx, fy as given and rounds the view's size times them; a
    # view whose rounded size equals its own would be copied, not resized.
    view_is_copied = (round(source_w * fx), round(source_h * fy)) == (source_w, source_h)
    if (source_w, source_h) == (width, height) or view_is_copied:
        resized = resize_image(image, size_wh)
    else:
        view = image[:source_h, :source_w]
        resized = _keep_channel_axis(cv2.resize(view, None, fx=fx, fy=fy, interpolation=IMAGE_INTERPOLATION), image)
    return resized[y1:y2, x1:x2]


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

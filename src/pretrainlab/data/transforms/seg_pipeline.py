"""Segmentation train / validation pipelines with MMSegmentation 1.2.2 semantics.

Train (the ADE20k / Cityscapes recipe of MMSeg):
    random resize (scale × ratio, keep aspect) → random crop with cat_max_ratio →
    horizontal flip → photometric distortion → `SegTrainSample` (uint8), then per batch
    `seg_collate.collate_segmentation`: normalise (BGR → RGB, (x − mean)/std) and pad.
Validation:
    keep-aspect resize of the image only (the label stays at its original size, metrics are
    computed there) → normalise → optional bottom-right zero pad to a multiple of
    `size_divisor`.

Colour order: images enter as HWC uint8 **BGR** (what OpenCV decodes and what MMSeg
uses), every transform works in BGR (photometric's HSV conversions need to know it), and
`seg_normalize.normalize_into` is the single place converting to RGB. Labels are (H, W)
integer maps with 255 = ignore, carried as uint8; training samples keep them as uint8 (the
collate casts them to int64 while padding), validation returns int64.

Channels: images have C = 3 (BGR, the MMSeg case, bit-exact), 4 (BGR + a 4th channel such as
depth or IR, which only moves geometrically: photometric distortion leaves it alone) or 1 (grey /
thermal: photometric distortion applies brightness and contrast only). The random draws do not
depend on C. `mean` / `std` (of the val pipeline and the collate) have C values, in RGB(X) order.

Two shortcuts give the same bits as running the transforms one after the other (a test
pins this): the crop box is chosen on the resized label before the image is resized, so
only the part of the image the crop needs is resized (`seg_resize.resize_image_region`);
and photometric distortion's trailing brightness/contrast table, if any, travels with the
sample (`SegTrainSample.value_map`) and is folded into the collate's normalisation tables,
which saves a pass over the image. Photometric distortion runs on the crop, as in MMSeg.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pretrainlab.data.images import check_mean_std
from pretrainlab.data.transforms.photometric import (
    photometric_distortion_deferred,
    sample_photometric_params,
)
from pretrainlab.data.transforms.seg_collate import IGNORE_INDEX, pad_image
from pretrainlab.data.transforms.seg_crop import choose_crop_box, crop
from pretrainlab.data.transforms.seg_flip import random_flip
from pretrainlab.data.transforms.seg_normalize import (
    IMAGENET_MEAN_RGB,
    IMAGENET_STD_RGB,
    normalize,
)
from pretrainlab.data.transforms.seg_resize import (
    rescale_size,
    resize_image,
    resize_image_region,
    resize_label,
    sample_resize_scale,
)
from pretrainlab.data.transforms.seg_sample import SegTrainSample


def as_uint8_label(label: np.ndarray) -> np.ndarray:
    """(H, W) integer label → uint8 (values must lie in [0, 255]); uint8 input is returned as is."""
    if label.ndim != 2:
        raise ValueError(f"label must be an (H, W) array, got shape {label.shape}")
    if label.dtype == np.uint8:
        return label
    if not np.issubdtype(label.dtype, np.integer):
        raise ValueError(f"label must have an integer dtype, got {label.dtype}")
    if label.size and (label.min() < 0 or label.max() > 255):
        raise ValueError(f"label values must lie in [0, 255], got range [{label.min()}, {label.max()}]")
    return label.astype(np.uint8)


def _check_image(image_bgr: np.ndarray) -> None:
    if image_bgr.dtype != np.uint8 or image_bgr.ndim != 3 or image_bgr.shape[2] not in (1, 3, 4):
        raise ValueError(
            f"expected an (H, W, C) uint8 BGR image with C in (1, 3, 4), "
            f"got {image_bgr.dtype} of shape {image_bgr.shape}"
        )


def _label_tensor(label: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(label.astype(np.int64))  # astype copies into a contiguous array


@dataclass(frozen=True)
class SegTrainPipeline:
    """MMSeg's training transforms: (H, W, C) uint8 BGR(X) + (H, W) label → `SegTrainSample` (uint8), C = 1, 3, 4.

    The sample is at most `crop_size`; `seg_collate.collate_segmentation` normalises and
    pads a batch of them (smaller crops come from images smaller than the crop after resizing).
    """

    crop_size: int | tuple[int, int] = 512
    scale: tuple[int, int] = (2048, 512)
    ratio_range: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    flip_p: float = 0.5
    photometric: bool = True
    ignore_index: int = IGNORE_INDEX

    def __post_init__(self) -> None:
        crop = (self.crop_size, self.crop_size) if isinstance(self.crop_size, int) else tuple(self.crop_size)
        if len(crop) != 2 or min(crop) <= 0:
            raise ValueError(f"crop_size must be a positive int or (h, w), got {self.crop_size!r}")
        object.__setattr__(self, "crop_size", crop)
        if not 0.0 < self.cat_max_ratio <= 1.0:
            raise ValueError(f"cat_max_ratio must be in (0, 1] (1 disables the check), got {self.cat_max_ratio}")
        if not 0.0 <= self.flip_p <= 1.0:
            raise ValueError(f"flip_p must be in [0, 1], got {self.flip_p}")

    def __call__(self, image_bgr: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> SegTrainSample:
        _check_image(image_bgr)
        label = as_uint8_label(label)
        height, width = label.shape
        if image_bgr.shape[:2] != (height, width):
            raise ValueError(f"label shape {label.shape} does not match image shape {image_bgr.shape[:2]}")
        # random_resize then random_crop, with the same draws; the image is resized last, and only where cropped.
        size_wh = rescale_size(width, height, sample_resize_scale(rng, self.scale, self.ratio_range))
        if size_wh != (width, height):
            label = resize_label(label, size_wh)
        box = choose_crop_box(label, rng, self.crop_size, self.cat_max_ratio, self.ignore_index)
        image, label = resize_image_region(image_bgr, size_wh, box), crop(label, box)
        image, label = random_flip(image, label, rng, self.flip_p)
        value_map = None
        if self.photometric:
            p = sample_photometric_params(rng)
            # A trailing brightness/contrast table is left to the collate's normalisation tables.
            image, value_map = photometric_distortion_deferred(image, p.beta, p.mode, p.alpha, p.alpha_s, p.delta)
        return SegTrainSample(
            image=torch.from_numpy(np.ascontiguousarray(image)),  # (h, w, C) uint8 BGR(X)
            value_map=None if value_map is None else torch.from_numpy(value_map),
            label=torch.from_numpy(np.ascontiguousarray(label)),  # (h, w) uint8
        )


@dataclass(frozen=True)
class SegValPipeline:
    """MMSeg's test transforms: resize the image to fit `scale` (keep aspect), keep the label as is.

    Takes (H, W, C) uint8 BGR(X) images, C = len(mean) = len(std) (1, 3 or 4, 0..255 scale, RGB(X) order).
    Returns `(image (C, h', w') float32, label (H, W) int64)` where (h', w') is
    `resized_size(H, W)` rounded up to a multiple of `size_divisor` (zero padding at the
    bottom/right; crop the logits back with `resized_size` before resizing them to (H, W)).
    """

    scale: tuple[int, int] = (2048, 512)
    size_divisor: int | None = None
    mean: Sequence[float] = IMAGENET_MEAN_RGB
    std: Sequence[float] = IMAGENET_STD_RGB

    def __post_init__(self) -> None:
        if self.size_divisor is not None and self.size_divisor <= 0:
            raise ValueError(f"size_divisor must be a positive int or None, got {self.size_divisor}")
        check_mean_std(self.mean, self.std)

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """(h', w') of the resized, unpadded image for an original (H, W)."""
        new_w, new_h = rescale_size(width, height, self.scale)
        return new_h, new_w

    def __call__(
        self, image_bgr: np.ndarray, label: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`rng` is accepted (and unused) so train and val pipelines share one call signature."""
        _check_image(image_bgr)
        label = as_uint8_label(label)
        if label.shape != image_bgr.shape[:2]:
            raise ValueError(f"label shape {label.shape} does not match image shape {image_bgr.shape[:2]}")
        new_h, new_w = self.resized_size(*label.shape)
        image = image_bgr if (new_h, new_w) == label.shape else resize_image(image_bgr, (new_w, new_h))
        tensor = normalize(image, self.mean, self.std)
        return pad_image(tensor, self.size_divisor), _label_tensor(label)

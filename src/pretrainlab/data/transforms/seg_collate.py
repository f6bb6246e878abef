"""Batch normalisation and padding for segmentation (MMSegmentation `SegDataPreProcessor` + `stack_batch`).

Images and labels of a batch are padded at the bottom and right to a common size: the
batch maximum, optionally at least `size`, optionally rounded up to a multiple of
`size_divisor`. Images are padded with 0 — *after* normalisation, as MMSeg's data
preprocessor does — and labels with the ignore index 255.

`collate_segmentation` takes the uint8 training samples of `SegTrainPipeline` and
normalises each one straight into its slot of the batch tensor; `pad_batch` stacks
already-normalised images (validation). Images have C = 1, 3 or 4 channels, the same in a batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from pretrainlab.data.images import check_mean_std
from pretrainlab.data.transforms.seg_normalize import (
    IMAGENET_MEAN_RGB,
    IMAGENET_STD_RGB,
    normalization_tables,
    normalize_into,
)
from pretrainlab.data.transforms.seg_sample import SegTrainSample

IGNORE_INDEX = 255


def padded_size(
    sizes: Sequence[tuple[int, int]], size_divisor: int | None = None, size: tuple[int, int] | None = None
) -> tuple[int, int]:
    """Common (H, W) for a batch of (H, W) sizes: max, at least `size`, rounded up to `size_divisor`."""
    if not sizes:
        raise ValueError("cannot pad an empty batch")
    if size_divisor is not None and size_divisor <= 0:
        raise ValueError(f"size_divisor must be a positive int or None, got {size_divisor}")
    height = max(h for h, _ in sizes)
    width = max(w for _, w in sizes)
    if size is not None:
        height, width = max(height, size[0]), max(width, size[1])
    if size_divisor is not None:
        height = -(-height // size_divisor) * size_divisor
        width = -(-width // size_divisor) * size_divisor
    return height, width


def _paste(dst: torch.Tensor, src: torch.Tensor, fill: float) -> None:
    """Copy `src` (..., h, w) to the top-left of `dst` (..., H, W) and fill only the rest with `fill`."""
    height, width = src.shape[-2:]
    dst[..., :height, :width] = src
    dst[..., :height, width:] = fill
    dst[..., height:, :] = fill


def pad_image(image: torch.Tensor, size_divisor: int | None = None, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Pad one (C, H, W) image bottom-right with 0 to `padded_size`; returned as is when no pad is needed."""
    target = padded_size([tuple(image.shape[-2:])], size_divisor, size)
    if target == tuple(image.shape[-2:]):
        return image
    out = image.new_empty(*image.shape[:-2], *target)
    _paste(out, image, 0.0)
    return out


def pad_batch(
    images: Sequence[torch.Tensor],
    labels: Sequence[torch.Tensor] | None = None,
    size_divisor: int | None = None,
    size: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Stack (C, H_i, W_i) images and (H_i, W_i) labels into padded batches.

    Args:
        images: per-sample normalised images, same C and dtype.
        labels: per-sample label maps (any integer dtype), or None.
        size_divisor: round the padded size up to a multiple of this (e.g. 14 for ViT/14).
        size: minimum padded (H, W) — MMSeg's `size=crop_size` gives always-512² batches.

    Returns:
        `(images (B, C, H, W) padded with 0, labels (B, H, W) int64 padded with 255 or None)`.
    """
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"got {len(images)} images but {len(labels)} labels")
    sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
    height, width = padded_size(sizes, size_divisor, size)
    channels = {int(img.shape[0]) for img in images}
    if len(channels) != 1:
        raise ValueError(f"images in a batch must have the same number of channels, got {sorted(channels)}")
    for i, (label, (h, w)) in enumerate(zip(labels or [], sizes)):
        if tuple(label.shape) != (h, w):
            raise ValueError(f"label {i} has shape {tuple(label.shape)} but its image is {(h, w)}")
    # Allocate uninitialised and write only the pad regions: no full zero / 255 pass.
    batch = images[0].new_empty(len(images), channels.pop(), height, width)  # (B, C, H, W)
    for i, img in enumerate(images):
        _paste(batch[i], img, 0.0)
    if labels is None:
        return batch, None
    label_batch = torch.empty(len(labels), height, width, dtype=torch.int64)  # (B, H, W)
    for i, label in enumerate(labels):
        _paste(label_batch[i], label, IGNORE_INDEX)
    return batch, label_batch


def collate_segmentation(
    samples: Sequence[SegTrainSample],
    mean: Sequence[float] = IMAGENET_MEAN_RGB,
    std: Sequence[float] = IMAGENET_STD_RGB,
    size_divisor: int | None = None,
    size: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DataLoader `collate_fn` for `SegTrainSample`s → (images (B, C, H, W) float32, labels (B, H, W) int64).

    C = len(mean) = len(std) (1, 3 or 4, 0..255 scale, RGB(X) order) and every sample image is
    (h, w, C). Each image is normalised ((x − mean) / std, BGR → RGB; its pending `value_map`
    folded into the tables of the colour channels) directly into the batch, and padded
    bottom-right with 0; labels with 255.
    Bit-identical to `pad_batch` over `normalize(sample.augmented_image(), mean, std)`.
    Bind the options with `functools.partial(collate_segmentation, mean=..., std=..., size=(512, 512))`.
    """
    if not samples:
        raise ValueError("cannot collate an empty batch")
    num_channels = check_mean_std(mean, std)
    sizes = [(int(sample.label.shape[0]), int(sample.label.shape[1])) for sample in samples]
    for i, (sample, hw) in enumerate(zip(samples, sizes)):
        if tuple(sample.image.shape) != (*hw, num_channels):
            raise ValueError(
                f"sample {i}: image {tuple(sample.image.shape)} does not match label {hw} "
                f"(expected (h, w, {num_channels}), one channel per mean / std value)"
            )
    height, width = padded_size(sizes, size_divisor, size)
    images = torch.empty(len(samples), num_channels, height, width)  # (B, C, H, W); pads written by _paste
    labels = torch.empty(len(samples), height, width, dtype=torch.int64)  # (B, H, W)
    images_np = images.numpy()
    for i, (sample, (h, w)) in enumerate(zip(samples, sizes)):
        value_map = None if sample.value_map is None else sample.value_map.numpy()
        tables = normalization_tables(mean, std, value_map)
        if (h, w) == (height, width):  # the usual case (crop = batch size): no staging copy
            normalize_into(images_np[i], sample.image.numpy(), tables)
        else:
            staged = np.empty((num_channels, h, w), dtype=np.float32)  # (C, h, w)
            normalize_into(staged, sample.image.numpy(), tables)
            _paste(images[i], torch.from_numpy(staged), 0.0)
        _paste(labels[i], sample.label, IGNORE_INDEX)  # uint8 → int64 in the copy
    return images, labels

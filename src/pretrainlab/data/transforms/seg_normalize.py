"""BGR uint8 image → normalised RGB CHW float32 tensor (MMSegmentation `SegDataPreProcessor`).

This is the one place where the segmentation pipeline converts BGR (OpenCV's decode order,
kept through every transform) to RGB: channel c of the output is input channel 2 − c.
Then out = (x − mean) / std per channel, with `mean` / `std` given in **RGB** order, as in
MMSeg configs (`bgr_to_rgb=True`, mean (123.675, 116.28, 103.53), std (58.395, 57.12, 57.375)).

Images have C = 1, 3 or 4 channels and `mean` / `std` one value per channel (0..255 scale):
a 1-channel image is normalised as it is; a 4-channel BGR + X image gives R, G, B, X (only
the colour channels are reordered, and only they take a photometric `value_map`).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from pretrainlab.data.images import check_mean_std
from pretrainlab.data.transforms.photometric import COLOUR_CHANNELS

IMAGENET_MEAN_RGB = (123.675, 116.28, 103.53)
IMAGENET_STD_RGB = (58.395, 57.12, 57.375)


def normalization_tables(
    mean: Sequence[float], std: Sequence[float], value_map: np.ndarray | None = None
) -> list[np.ndarray]:
    """Per-channel (256,) float32 tables of (v − mean) / std, computed in float32 like the tensor op.

    `mean` / `std`: 1, 3 or 4 values each. `value_map`, a (256,) uint8 table applied first to
    the colour channels (all but a 4th), is folded in.
    """
    check_mean_std(mean, std)
    values = np.arange(256, dtype=np.float32)
    tables = [(values - np.float32(m)) / np.float32(s) for m, s in zip(mean, std)]
    if value_map is None:
        return tables
    if value_map.shape != (256,) or value_map.dtype != np.uint8:
        raise ValueError(f"value_map must be a (256,) uint8 table, got {value_map.dtype} {value_map.shape}")
    return [table[value_map] if c < COLOUR_CHANNELS else table for c, table in enumerate(tables)]


def _source_channel(c: int, num_channels: int) -> int:
    """Input (BGR order) channel of output (RGB order) channel c: 2 − c for colour channels of a 3- or 4-channel
    image, c otherwise (the one channel of a grey image, the 4th of BGR + X)."""
    return COLOUR_CHANNELS - 1 - c if num_channels >= COLOUR_CHANNELS and c < COLOUR_CHANNELS else c


def normalize_into(out: np.ndarray, image_bgr: np.ndarray, tables: Sequence[np.ndarray]) -> None:
    """Write the (h, w, C) uint8 BGR image through per-channel `tables` into `out`, (C, h, w) float32.

    `out` must be C-contiguous (e.g. one sample of a batch); output channel c reads input
    channel 2 − c for the colour channels of 3- and 4-channel images (BGR → RGB) and channel c
    otherwise, so `tables` are in RGB(X) order.
    """
    if min(image_bgr.strides) < 0:  # cv2 reads positive-stride views only (e.g. not np.flip views)
        image_bgr = np.ascontiguousarray(image_bgr)
    num_channels = image_bgr.shape[2]
    planes = cv2.split(image_bgr)  # contiguous (h, w) uint8 planes in B, G, R order
    for c in range(num_channels):
        cv2.LUT(planes[_source_channel(c, num_channels)], tables[c], dst=out[c])


def normalize(
    image_bgr: np.ndarray,
    mean: Sequence[float] = IMAGENET_MEAN_RGB,
    std: Sequence[float] = IMAGENET_STD_RGB,
    value_map: np.ndarray | None = None,
) -> torch.Tensor:
    """(H, W, C) uint8 BGR(X) → (C, H, W) float32 RGB(X) tensor (x − mean) / std, C = 1, 3 or 4.

    Bit-identical to `(x.float() − mean) / std` on the tensor: a uint8 channel has 256
    values, so each channel goes through a float32 table of the same expression.
    `value_map`, a (256,) uint8 table, is applied to the colour channels first (it is folded into
    the tables, e.g. the trailing brightness/contrast of `photometric_distortion_deferred`).
    An (H, W) image is taken as (H, W, 1). `mean` / `std` have C values each.
    """
    if image_bgr.ndim == 2:
        image_bgr = image_bgr[:, :, None]
    if image_bgr.dtype != np.uint8 or image_bgr.ndim != 3 or image_bgr.shape[2] not in (1, 3, 4):
        raise ValueError(
            f"normalize expects an (H, W, C) uint8 BGR image with C in (1, 3, 4), "
            f"got {image_bgr.dtype} of shape {image_bgr.shape}"
        )
    num_channels = image_bgr.shape[2]
    if len(mean) != num_channels or len(std) != num_channels:
        raise ValueError(
            f"a {num_channels}-channel image needs {num_channels} mean / std values, "
            f"got mean={tuple(mean)}, std={tuple(std)}"
        )
    tables = normalization_tables(mean, std, value_map)
    out = np.empty((num_channels, *image_bgr.shape[:2]), dtype=np.float32)  # (C, H, W)
    normalize_into(out, image_bgr, tables)
    return torch.from_numpy(out)

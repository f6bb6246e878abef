"""Image file reading: decode any common file into one RGB uint8 (H, W, 3) array.

Every dataset reader goes through `read_image`, so the conversions are decided in one
place and are explicit:

* Decoding uses OpenCV (`cv2.imdecode`, which returns nothing for truncated PNG and
  JPEG files); an empty, truncated or undecodable file raises `BrokenSampleError`, which
  `SkippingDataset` counts and skips.
* Channel policy for single-channel data (e.g. thermal): `"copy"` repeats the one
  channel three times; `"pick:<i>"` takes channel `i` (RGB order) of a multi-channel
  file and repeats it, which is how a thermal image stored as 3 identical-ish channels,
  or one band of a multi-band file, is turned into a grey RGB image. An alpha channel is
  dropped.
* 16-bit files are scaled to 8 bits: `"full"` maps the whole uint16 range
  (value / 257, so 65535 -> 255); `"minmax"` stretches each image's own min..max to
  0..255, for sensors whose values occupy a narrow band of the range.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from pretrainlab.data.formats._robust import BrokenSampleError

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

Uint16Scaling = Literal["full", "minmax"]

_PICK = re.compile(r"^pick:(\d+)$")


def check_channel_policy(policy: str) -> None:
    """Raise ValueError unless `policy` is `"copy"` or `"pick:<i>"`."""
    if policy != "copy" and _PICK.match(policy) is None:
        raise ValueError(f"channel policy {policy!r} is not valid; expected 'copy' or 'pick:<i>' (e.g. 'pick:0')")


def check_uint16_scaling(uint16_scaling: str) -> None:
    """Raise ValueError unless `uint16_scaling` is `"full"` or `"minmax"`."""
    if uint16_scaling not in ("full", "minmax"):
        raise ValueError(f"uint16_scaling {uint16_scaling!r} is not valid; expected 'full' or 'minmax'")


def is_image_file(path: Path) -> bool:
    """True when the suffix (any case) is one of IMAGE_EXTENSIONS."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def scale_to_uint8(image: np.ndarray, uint16_scaling: Uint16Scaling = "full") -> np.ndarray:
    """Convert a uint8 or uint16 array (any shape) to uint8.

    `"full"`: round(value / 257); `"minmax"`: (value - min) / (max - min) * 255 per image
    (a constant image becomes 0).
    """
    if image.dtype == np.uint8:
        return image
    if image.dtype != np.uint16:
        raise ValueError(f"image dtype {image.dtype} is not supported; expected uint8 or uint16")
    check_uint16_scaling(uint16_scaling)
    if uint16_scaling == "full":
        return ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    low, high = int(image.min()), int(image.max())
    if high == low:
        return np.zeros(image.shape, dtype=np.uint8)
    scaled = (image.astype(np.float32) - low) * (255.0 / (high - low))
    return np.rint(scaled).astype(np.uint8)


def to_rgb(image: np.ndarray, channel_policy: str = "copy") -> np.ndarray:
    """Turn a decoded (H, W) or (H, W, C) uint8 array in RGB(A) order into (H, W, 3).

    Args:
        image: (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) uint8, channels in RGB(A) order.
        channel_policy: `"copy"` keeps RGB as is and repeats a single channel;
            `"pick:<i>"` repeats channel `i` three times.
    """
    check_channel_policy(channel_policy)
    if image.ndim == 2:
        image = image[:, :, None]  # (H, W, 1)
    if image.ndim != 3:
        raise ValueError(f"image of shape {image.shape} is not supported; expected (H, W) or (H, W, C)")
    num_channels = image.shape[2]
    match = _PICK.match(channel_policy)
    if match is not None:
        channel = int(match.group(1))
        if channel >= num_channels:
            raise ValueError(
                f"channel policy {channel_policy!r} picks channel {channel} of an image with {num_channels}"
            )
        return np.repeat(image[:, :, channel : channel + 1], 3, axis=2)
    if num_channels == 1:
        return np.repeat(image, 3, axis=2)
    if num_channels in (3, 4):
        return np.ascontiguousarray(image[:, :, :3])
    raise ValueError(f"image with {num_channels} channels needs channel policy 'pick:<i>', got {channel_policy!r}")


def decode_image(
    data: bytes, *, channel_policy: str = "copy", uint16_scaling: Uint16Scaling = "full"
) -> np.ndarray:
    """Decode encoded image bytes into an RGB uint8 (H, W, 3) array.

    Raises:
        BrokenSampleError: the bytes are empty, truncated or not an image.
    """
    if len(data) == 0:
        raise BrokenSampleError("empty file (0 bytes)")
    try:
        decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as error:
        raise BrokenSampleError(f"OpenCV could not decode the file: {error}") from error
    if decoded is None:
        raise BrokenSampleError(f"not a decodable image ({len(data)} bytes, truncated or unknown format)")
    if decoded.ndim == 3 and decoded.shape[2] == 3:
        decoded = decoded[:, :, ::-1]  # BGR -> RGB
    elif decoded.ndim == 3 and decoded.shape[2] == 4:
        decoded = decoded[:, :, [2, 1, 0, 3]]  # BGRA -> RGBA
    return to_rgb(scale_to_uint8(decoded, uint16_scaling), channel_policy)


def read_image(
    path: Path | str, *, channel_policy: str = "copy", uint16_scaling: Uint16Scaling = "full"
) -> np.ndarray:
    """Read an image file into an RGB uint8 (H, W, 3) array (see the module docstring).

    Raises:
        BrokenSampleError: the file is missing, empty, truncated or not an image.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise BrokenSampleError(f"cannot read {path}: {error}") from error
    return decode_image(data, channel_policy=channel_policy, uint16_scaling=uint16_scaling)

"""Image file reading: decode any common file into one uint8 (H, W, channels) array, RGB(A) order.

Every dataset reader goes through `read_image` (or `decode_image` for bytes), so the
conversions are decided in one place and are explicit:

* Decoding uses OpenCV (`cv2.imdecode`, which returns nothing for truncated PNG and
  JPEG files); an empty, truncated or undecodable file raises `BrokenSampleError`, which
  `SkippingDataset` counts and skips. Colour files come back in RGB (RGBA) order.
* 16-bit files are scaled to 8 bits first (8-bit files are kept as they are, whatever the
  scaling): `"full"` maps the whole uint16 range (round(value / 257), so 65535 -> 255);
  `"minmax"` stretches each image's own min..max to 0..255; `"window"` clips to
  `intensity_window = (low, high)`, raw sensor values, and maps low..high linearly to 0..255
  (rounded) — a fixed window for sensors whose values occupy a narrow band (thermal), so the
  same temperature gives the same grey level in every image. The scaling sees all channels of
  the file at once (minmax takes one min and one max over them).
* `channels` is what the model receives; `channel_policy` (`"copy"`, `"pick:<i>"` or `"learned"`)
  says how a file's channels become that many:

  - `channels=3`: a 1-channel file is repeated three times; RGB stays; RGBA drops its
    alpha; `"pick:<i>"` takes channel i (RGB(A) order) of any file and repeats it three times
    (a thermal image stored as three near-identical channels, one band of a multi-band file).
  - `channels=1`: a 1-channel file as is; a multi-channel file needs `"pick:<i>"` (channel i
    is taken) — with `"copy"` it is an error naming the file's channel count.
  - `channels=4`: a 4-channel file as is (RGB + its 4th channel, e.g. alpha, depth, IR), with
    `"copy"` only; any other file is an error.
  - `"learned"` (with `channels=1` only): a 1-channel file as is; the model turns it into the 3
    channels of its backbone with a learned 1x1 convolution (`models/layers/channel_adapter.py`),
    initialised to the repetition `"copy"` does. Any other file is an error.

  A file that does not fit raises `ChannelMismatchError`, a ValueError that the datasets
  raise (a configuration error) instead of skipping the file as broken.

Normalisation statistics of model inputs with 1, 3 or 4 channels (`default_mean_std`) are
fractions of 1 (pixel / 255), in RGB(A) order, ImageNet's by default: 3 channels use them as
they are; 1 channel the average of the three means and of the three stds (a grey image of an
ImageNet-like scene); a 4th channel of unknown meaning gets 0.5 / 0.5, mapping 0..1 to -1..1.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from pretrainlab.data.formats._robust import BrokenSampleError, ChannelMismatchError

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
CHANNEL_COUNTS: tuple[int, ...] = (1, 3, 4)

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
GRAY_MEAN: tuple[float] = (0.449,)  # mean of IMAGENET_MEAN
GRAY_STD: tuple[float] = (0.226,)  # mean of IMAGENET_STD
EXTRA_CHANNEL_MEAN, EXTRA_CHANNEL_STD = 0.5, 0.5

Uint16Scaling = Literal["full", "minmax", "window"]
UINT16_SCALINGS: tuple[str, ...] = ("full", "minmax", "window")

LEARNED_POLICY = "learned"  # 1-channel images for a learned 1 -> 3 convolution in front of the backbone
_PICK = re.compile(r"^pick:(\d+)$")


def check_channels(channels: int) -> None:
    """Raise ValueError unless `channels` is 1, 3 or 4."""
    if channels not in CHANNEL_COUNTS:
        raise ValueError(f"channels={channels} is not valid; expected one of {CHANNEL_COUNTS}")


def default_mean_std(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std), each of length `channels` (1, 3 or 4), fractions of 1 — see the module docstring."""
    check_channels(channels)
    if channels == 1:
        return GRAY_MEAN, GRAY_STD
    if channels == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return IMAGENET_MEAN + (EXTRA_CHANNEL_MEAN,), IMAGENET_STD + (EXTRA_CHANNEL_STD,)


def check_mean_std(mean: Sequence[float], std: Sequence[float]) -> int:
    """The channel count of `mean` / `std`; ValueError unless they have equal length 1, 3 or 4 and std > 0."""
    if len(mean) != len(std) or len(mean) not in CHANNEL_COUNTS or min(std) <= 0:
        raise ValueError(
            f"mean={tuple(mean)}, std={tuple(std)} are not valid; expected sequences of equal length 1, 3 or 4 "
            "(one value per image channel), std > 0"
        )
    return len(mean)


def check_channel_policy(policy: str) -> None:
    """Raise ValueError unless `policy` is `"copy"`, `"pick:<i>"` or `"learned"`."""
    if policy not in ("copy", LEARNED_POLICY) and _PICK.match(policy) is None:
        raise ValueError(
            f"channel policy {policy!r} is not valid; expected 'copy', 'pick:<i>' (e.g. 'pick:0') or 'learned'"
        )


def check_uint16_scaling(uint16_scaling: str, intensity_window: Sequence[float] | None = None) -> None:
    """Raise ValueError unless `uint16_scaling` is `"full"`, `"minmax"` or `"window"`, and
    `intensity_window` is a `(low, high)` pair with 0 <= low < high <= 65535 exactly when it is `"window"`."""
    if uint16_scaling not in UINT16_SCALINGS:
        expected = ", ".join(UINT16_SCALINGS)
        raise ValueError(f"uint16_scaling {uint16_scaling!r} is not valid; expected one of {expected}")
    if uint16_scaling != "window":
        if intensity_window is not None:
            raise ValueError(
                f"intensity_window={tuple(intensity_window)} is only used with uint16_scaling 'window', "
                f"got {uint16_scaling!r}"
            )
        return
    if intensity_window is None:
        raise ValueError("uint16_scaling 'window' needs intensity_window=(low, high), raw sensor values; got None")
    if len(intensity_window) != 2 or not 0 <= intensity_window[0] < intensity_window[1] <= 65535:
        raise ValueError(
            f"intensity_window={tuple(intensity_window)} is not valid; "
            "expected (low, high) with 0 <= low < high <= 65535"
        )


def is_image_file(path: Path) -> bool:
    """True when the suffix (any case) is one of IMAGE_EXTENSIONS."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def scale_to_uint8(
    image: np.ndarray, uint16_scaling: Uint16Scaling = "full", intensity_window: Sequence[float] | None = None
) -> np.ndarray:
    """Convert a uint8 or uint16 array (any shape) to uint8; uint8 is returned as is.

    `"full"`: round(value / 257); `"minmax"`: (value - min) / (max - min) * 255 per image (a
    constant image becomes 0); `"window"`: (clip(value, low, high) - low) / (high - low) * 255
    for `intensity_window = (low, high)`; the last two rounded half to even.
    """
    if image.dtype == np.uint8:
        return image
    if image.dtype != np.uint16:
        raise ValueError(f"image dtype {image.dtype} is not supported; expected uint8 or uint16")
    check_uint16_scaling(uint16_scaling, intensity_window)
    if uint16_scaling == "full":
        return ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if uint16_scaling == "window":
        assert intensity_window is not None  # checked above
        low, high = float(intensity_window[0]), float(intensity_window[1])
        image = np.clip(image, low, high)
    else:
        low, high = float(image.min()), float(image.max())
        if high == low:
            return np.zeros(image.shape, dtype=np.uint8)
    scaled = (image.astype(np.float32) - np.float32(low)) * np.float32(255.0 / (high - low))
    return np.rint(scaled).astype(np.uint8)


def select_channels(image: np.ndarray, channels: int = 3, channel_policy: str = "copy") -> np.ndarray:
    """Turn a decoded uint8 array in RGB(A) order into (H, W, channels) by the rules of the module docstring.

    Args:
        image: (H, W) or (H, W, C) uint8, channels in RGB(A) order.
        channels: 1, 3 or 4, the channel count of the result.
        channel_policy: `"copy"`, `"pick:<i>"` or `"learned"` (channels=1, single-channel images only).

    Returns:
        (H, W, channels) uint8.

    Raises:
        ChannelMismatchError (a ValueError): the image's channels do not fit `channels` / `channel_policy`.
    """
    check_channels(channels)
    check_channel_policy(channel_policy)
    if image.ndim == 2:
        image = image[:, :, None]  # (H, W, 1)
    if image.ndim != 3:
        raise ValueError(f"image of shape {image.shape} is not supported; expected (H, W) or (H, W, C)")
    num_channels = image.shape[2]
    if channel_policy == LEARNED_POLICY:
        if channels != 1:
            raise ValueError(f"channel policy 'learned' gives the model 1 channel (a learned 1x1 convolution makes "
                             f"the backbone's 3); channels must be 1, got {channels}")  # fmt: skip
        if num_channels != 1:
            raise ChannelMismatchError(
                f"channel policy 'learned' takes single-channel images; got one with {num_channels} channels"
            )
        return np.ascontiguousarray(image)
    match = _PICK.match(channel_policy)
    if match is not None:
        channel = int(match.group(1))
        if channel >= num_channels:
            raise ChannelMismatchError(
                f"channel policy {channel_policy!r} picks channel {channel} of an image with {num_channels}"
            )
        if channels == 4:
            raise ChannelMismatchError(
                f"channels=4 takes a 4-channel file as is, with channel policy 'copy'; got {channel_policy!r}"
            )
        return np.repeat(image[:, :, channel : channel + 1], channels, axis=2)  # (H, W, channels)
    if num_channels == channels:
        return np.ascontiguousarray(image)  # decoded colour files are reversed (BGR -> RGB) views
    if channels == 3 and num_channels == 1:
        return np.repeat(image, 3, axis=2)
    if channels == 3 and num_channels == 4:
        return np.ascontiguousarray(image[:, :, :3])  # alpha dropped
    if channels == 1:
        raise ChannelMismatchError(
            f"channels=1 cannot take a {num_channels}-channel image with channel policy 'copy'; "
            f"use 'pick:<i>' to choose one of its channels"
        )
    raise ChannelMismatchError(
        f"channels={channels} cannot take a {num_channels}-channel image with channel policy 'copy'"
    )


def decode_image(
    data: bytes,
    *,
    channels: int = 3,
    channel_policy: str = "copy",
    uint16_scaling: Uint16Scaling = "full",
    intensity_window: Sequence[float] | None = None,
) -> np.ndarray:
    """Decode encoded image bytes into a uint8 (H, W, channels) array, RGB(A) order (see the module docstring).

    Raises:
        BrokenSampleError: the bytes are empty, truncated or not an image.
        ChannelMismatchError (a ValueError): the file's channels do not fit the options (e.g. channels=1
            with 'copy' on an RGB file); raised, not skipped, by the datasets.
        ValueError: the options are invalid.
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
    return select_channels(scale_to_uint8(decoded, uint16_scaling, intensity_window), channels, channel_policy)


def read_image(
    path: Path | str,
    *,
    channels: int = 3,
    channel_policy: str = "copy",
    uint16_scaling: Uint16Scaling = "full",
    intensity_window: Sequence[float] | None = None,
) -> np.ndarray:
    """Read an image file into a uint8 (H, W, channels) array, RGB(A) order (see the module docstring).

    Raises:
        BrokenSampleError: the file is missing, empty, truncated or not an image.
        ChannelMismatchError (a ValueError): the file's channels do not fit the options; the message names the file.
        ValueError: the options are invalid.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise BrokenSampleError(f"cannot read {path}: {error}") from error
    try:
        return decode_image(
            data,
            channels=channels,
            channel_policy=channel_policy,
            uint16_scaling=uint16_scaling,
            intensity_window=intensity_window,
        )
    except ChannelMismatchError as error:
        raise ChannelMismatchError(f"{path}: {error}") from None

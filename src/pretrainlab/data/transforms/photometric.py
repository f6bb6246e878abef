"""Photometric distortion of a BGR uint8 image, bit-identical to MMSegmentation 1.2.2 for 3 channels.

`PhotoMetricDistortion` (SSD-style colour jitter, Liu et al., "SSD: Single Shot MultiBox
Detector", ECCV 2016) as MMSegmentation applies it, read from its code:

1. brightness (p=0.5): out = uint8(clip(float32(img) + β, 0, 255)), β ~ U(−32, 32);
2. `mode` ~ randint(2); mode 1 applies contrast here (right after brightness);
3. saturation (p=0.5): BGR→HSV (OpenCV 8-bit), S = uint8(clip(float32(S)·α_s, 0, 255)), HSV→BGR;
4. hue (p=0.5): BGR→HSV, H = (H + δ) mod 180 with δ ~ randint(−18, 18) (upper exclusive), HSV→BGR;
5. mode 0 applies contrast here (last): uint8(clip(float32(img)·α, 0, 255)), α ~ U(0.5, 1.5).

Saturation and hue each make their own lossy HSV round trip. Every op truncates to uint8.

Channels: images are (H, W, C) uint8 with C = 3 (BGR, as above), 4 (BGR + a 4th channel,
e.g. depth or IR) or 1 (grey / thermal). The distortion acts on the colour channels, the
first `COLOUR_CHANNELS` = 3 (all of a 1-channel image): a 4th channel is left as it is, by
the HSV ops and by every value map (`apply_value_map`). A 1-channel image gets brightness and
contrast only; saturation and hue are skipped. The parameters are drawn the same way whatever
C is, so one seed gives the same draws (and the same random stream afterwards) for 1, 3 and 4
channels.

Speed: a uint8 input has 256 possible values, so brightness, contrast and the per-channel
HSV edits are evaluated once per value with the very same float32 expression and applied
through `cv2.LUT` — bit-identical to the elementwise computation. Consecutive value maps
(brightness then contrast) are composed into one table, and a trailing one can be handed
to the normalisation (`photometric_distortion_deferred`) instead of being applied here.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_VALUES = np.arange(256, dtype=np.float32)
_IDENTITY = np.arange(256, dtype=np.uint8)
COLOUR_CHANNELS = 3  # value maps and colour ops touch channels [0, 3); a 4th channel is left alone


@dataclass(frozen=True)
class PhotometricParams:
    """Drawn parameters; None means the op does not fire. `mode` 1 = contrast first, 0 = last."""

    beta: float | None
    mode: int
    alpha: float | None
    alpha_s: float | None
    delta: int | None


def sample_photometric_params(
    rng: np.random.Generator,
    brightness_delta: float = 32,
    contrast_range: tuple[float, float] = (0.5, 1.5),
    saturation_range: tuple[float, float] = (0.5, 1.5),
    hue_delta: int = 18,
) -> PhotometricParams:
    """Draw the parameters in MMSeg's order: brightness coin [β], mode, [contrast coin [α] if mode 1],
    saturation coin [α_s], hue coin [δ], [contrast coin [α] if mode 0]. A coin is `integers(2)`."""
    beta = float(rng.uniform(-brightness_delta, brightness_delta)) if rng.integers(2) else None
    mode = int(rng.integers(2))
    alpha = None
    if mode == 1 and rng.integers(2):
        alpha = float(rng.uniform(*contrast_range))
    alpha_s = float(rng.uniform(*saturation_range)) if rng.integers(2) else None
    delta = int(rng.integers(-hue_delta, hue_delta)) if rng.integers(2) else None
    if mode == 0 and rng.integers(2):
        alpha = float(rng.uniform(*contrast_range))
    return PhotometricParams(beta=beta, mode=mode, alpha=alpha, alpha_s=alpha_s, delta=delta)


def affine_lut(alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """(256,) uint8 table of uint8(clip(float32(v)·α + β, 0, 255)) — MMSeg's `convert` per value."""
    values = _VALUES * alpha + beta  # float32 arithmetic, as on the image itself
    return np.clip(values, 0, 255).astype(np.uint8)


def hue_lut(delta: int) -> np.ndarray:
    """(256,) uint8 table of (H + δ) mod 180 for 8-bit OpenCV hue values."""
    return ((np.arange(256, dtype=np.int64) + delta) % 180).astype(np.uint8)


def _check_image(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(
            f"photometric_distortion expects an (H, W, C) uint8 BGR image with C in (1, 3, 4), "
            f"got {image.dtype} {image.shape}"
        )


def apply_value_map(image: np.ndarray, value_map: np.ndarray) -> np.ndarray:
    """Map the colour channels of an (H, W, C) uint8 image through a (256,) uint8 table; shape kept.

    C = 1 or 3: every channel; C = 4: the first three, the 4th is copied unchanged.
    """
    if image.shape[2] == 4:
        lut = np.stack([value_map, value_map, value_map, _IDENTITY], axis=1)[None]  # (1, 256, 4): one table per channel
        return cv2.LUT(image, lut)
    return cv2.LUT(image, value_map).reshape(image.shape)  # cv2 drops the axis of (H, W, 1)


def _hsv_channel_edit(image_bgr: np.ndarray, channel: int, lut: np.ndarray) -> np.ndarray:
    """BGR→HSV, map one HSV channel through `lut`, HSV→BGR (one lossy round trip)."""
    hsv = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2HSV)
    plane = cv2.extractChannel(hsv, channel)
    cv2.LUT(plane, lut, dst=plane)
    cv2.insertChannel(plane, hsv, channel)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR, dst=hsv)


def photometric_distortion_deferred(
    image: np.ndarray,
    beta: float | None,
    mode: int,
    alpha: float | None,
    alpha_s: float | None,
    delta: int | None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """`photometric_distortion` with the trailing brightness / contrast left unapplied.

    Returns `(image, value_map)`: the (H, W, C) uint8 BGR image after the last HSV op, and
    the (256,) uint8 table of the remaining per-value ops for the colour channels (None when
    nothing remains); the result equals `apply_value_map(image, value_map)`. A consumer that
    maps values anyway (such as `seg_normalize.normalize(..., value_map=)`) can fold it in and
    save a pass over the image. C = 4: the 4th channel is returned unchanged; C = 1: `alpha_s`
    and `delta` are ignored (no saturation or hue on one channel).
    """
    _check_image(image)
    if mode not in (0, 1):
        raise ValueError(f"mode must be 0 (contrast last) or 1 (contrast first), got {mode!r}")
    if image.shape[2] == 4:
        colour, value_map = photometric_distortion_deferred(
            np.ascontiguousarray(image[:, :, :COLOUR_CHANNELS]), beta, mode, alpha, alpha_s, delta
        )  # (H, W, 3)
        return np.concatenate([colour, image[:, :, COLOUR_CHANNELS:]], axis=2), value_map  # (H, W, 4)
    if image.shape[2] == 1:
        alpha_s = delta = None  # saturation and hue need colour; their parameters were drawn all the same
    if min(image.strides) < 0:  # cv2 reads positive-stride views only
        image = np.ascontiguousarray(image)
    pending: np.ndarray | None = None  # value map not yet applied, composed across consecutive ops

    def compose(lut: np.ndarray) -> None:
        nonlocal pending
        pending = lut if pending is None else lut[pending]

    def flush(img: np.ndarray) -> np.ndarray:
        nonlocal pending
        if pending is None:
            return img
        out = cv2.LUT(img, pending)
        pending = None
        return out

    if beta is not None:
        compose(affine_lut(beta=beta))
    if mode == 1 and alpha is not None:
        compose(affine_lut(alpha=alpha))
    if alpha_s is not None:
        image = _hsv_channel_edit(flush(image), 1, affine_lut(alpha=alpha_s))
    if delta is not None:
        image = _hsv_channel_edit(flush(image), 0, hue_lut(delta))
    if mode == 0 and alpha is not None:
        compose(affine_lut(alpha=alpha))
    return image, pending


def photometric_distortion(
    image: np.ndarray,
    beta: float | None,
    mode: int,
    alpha: float | None,
    alpha_s: float | None,
    delta: int | None,
) -> np.ndarray:
    """Deterministic core: apply the given distortion to an (H, W, C) uint8 **BGR** image (C = 1, 3 or 4,
    see the module docstring).

    Args:
        image: (H, W, C) uint8 BGR (views with positive strides are fine; not modified).
        beta: brightness offset, or None when brightness does not fire.
        mode: 1 = contrast right after brightness, 0 = contrast last.
        alpha: contrast factor or None; alpha_s: saturation factor or None;
        delta: hue shift in OpenCV hue units (degrees / 2) or None.

    Returns:
        (H, W, C) uint8 BGR; the input itself when no op fires (C = 1 or 3).
    """
    out, value_map = photometric_distortion_deferred(image, beta, mode, alpha, alpha_s, delta)
    return out if value_map is None else apply_value_map(out, value_map)


def random_photometric_distortion(
    image: np.ndarray,
    rng: np.random.Generator,
    brightness_delta: float = 32,
    contrast_range: tuple[float, float] = (0.5, 1.5),
    saturation_range: tuple[float, float] = (0.5, 1.5),
    hue_delta: int = 18,
) -> np.ndarray:
    """`sample_photometric_params` then `photometric_distortion` on an (H, W, C) uint8 BGR image."""
    params = sample_photometric_params(rng, brightness_delta, contrast_range, saturation_range, hue_delta)
    return photometric_distortion(image, params.beta, params.mode, params.alpha, params.alpha_s, params.delta)

"""CIFAR-10-C corruptions on one uint8 (H, W, C) image, C = 1 (grey, thermal) or 3 (RGB), in numpy / OpenCV.

Hendrycks & Dietterich 2019, "Benchmarking Neural Network Robustness to Common Corruptions
and Perturbations" (ICLR). The per-severity constants are those of the authors'
`ImageNet-C/create_c/make_cifar_c.py` (github.com/hendrycks/robustness), tuned for 32 x 32
images; pixel-valued ones (blur sigmas, motion-blur radius) are applied as they are at any
image size. Every corruption works on pixels scaled to [0, 1] like the original, clips to
[0, 1] and returns uint8, **rounded** to the nearest level (the original truncates with
`np.uint8(...)`, which lowers every pixel by half a level on average).

    corrupt(image, "fog", severity=3, rng=np.random.default_rng(0))  # (H, W, C) uint8 -> same

Severity 0 returns an unchanged copy (bit-exact); severities 1-5 are CIFAR-10-C's. Random
numbers come only from the `rng` passed in, so one seed gives one output. Deliberate
differences from the original, each stated in the function's docstring:

* `motion_blur`: ImageMagick's MotionBlurImage (through Wand) is rebuilt as one `cv2.filter2D`
  kernel with the same taps (half-Gaussian weights, offsets rounded along the angle); edges
  replicated like ImageMagick's default virtual pixels; float arithmetic.
* `fog`: the same diamond-square plasma fractal, drawing from `rng` instead of NumPy's global
  state (the released fog patterns are not reproduced, their distribution is).
* `gaussian_blur`, `brightness`, `saturate`: OpenCV's Gaussian filter and float HSV instead of
  scikit-image's; the same kernel (radius round(4 sigma), edges replicated) and the same HSV maps.
* `jpeg_compression`, `pixelate`: OpenCV's libjpeg (4:2:0 chroma like PIL's default) and area
  resampling instead of PIL's; decoded JPEG pixels may differ from PIL's by a level or two.

Channels: the noises, blurs, contrast, JPEG, pixelate and fog act on every channel. On a
single-channel image `brightness` adds its constant to the grey value (the HSV value of a grey
pixel is the pixel itself) and `saturate` is refused: a grey image has no saturation to change.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from pretrainlab.registry import did_you_mean

MAX_SEVERITY = 5


def _check_image(image: np.ndarray, name: str) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3):
        described = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"corruption '{name}' expects a uint8 (H, W, C) image with C = 1 or 3, got {described}")


def _keep_channel_axis(result: np.ndarray) -> np.ndarray:
    """OpenCV returns (H, W) for an (H, W, 1) input: put the channel axis back."""
    return result[:, :, None] if result.ndim == 2 else result


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """[0, 1] float -> uint8, clipped and rounded to the nearest level."""
    return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


@dataclass(frozen=True)
class Corruption:
    """One corruption: `params[s - 1]` of severity s goes to `apply(x, param, rng)`, which maps a float32
    (H, W, C) image in [0, 1] to a float image (clipped to [0, 1] and rounded to uint8 by `__call__`)."""

    name: str
    params: tuple[Any, ...]  # one entry per severity 1..5
    apply: Callable[[np.ndarray, Any, np.random.Generator], np.ndarray]
    is_colour_only: bool = False  # refuses single-channel images

    def __call__(self, image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
        """(H, W, C) uint8 -> (H, W, C) uint8; severity 0 returns a copy of `image`."""
        _check_image(image, self.name)
        is_integer = isinstance(severity, (int, np.integer)) and not isinstance(severity, bool)
        if not is_integer or not 0 <= severity <= MAX_SEVERITY:
            raise ValueError(f"severity {severity!r} of corruption '{self.name}' is not valid; expected an integer "
                             f"in 0..{MAX_SEVERITY} (0 = clean)")  # fmt: skip
        if self.is_colour_only and image.shape[2] != 3:
            raise ValueError(f"corruption '{self.name}' needs an RGB (H, W, 3) image, got {image.shape}: a "
                             f"single-channel image has no colour saturation to change")  # fmt: skip
        if severity == 0:
            return image.copy()
        return _to_uint8(self.apply(image.astype(np.float32) * np.float32(1.0 / 255.0), self.params[severity - 1], rng))


def _gaussian_noise(x: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """x + N(0, std^2), independently per pixel and channel."""
    return x + rng.normal(0.0, std, size=x.shape)


def _shot_noise(x: np.ndarray, photons: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson(x * photons) / photons: photon noise at `photons` counts for a white pixel."""
    return rng.poisson(x * photons) / photons


def _impulse_noise(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Salt and pepper (scikit-image's `random_noise(mode="s&p")`): each pixel and channel is replaced
    with probability `amount`, by 1 or 0 with equal odds."""
    replaced = rng.random(x.shape) < amount
    salt = rng.random(x.shape) < 0.5
    return np.where(replaced, salt.astype(np.float32), x)


def _gaussian_blur(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian filter of `sigma` px with scikit-image's kernel: radius int(4 sigma + 0.5), edges replicated."""
    size = 2 * int(4.0 * sigma + 0.5) + 1
    blurred = cv2.GaussianBlur(x, (size, size), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REPLICATE)
    return _keep_channel_axis(blurred)


def motion_blur_kernel(radius: float, sigma: float, angle: float) -> np.ndarray:
    """ImageMagick's MotionBlurImage as a correlation kernel (K, K), K = 2 width - 1, width = 2 ceil(radius) + 1.

    Tap i = 0..width-1 has weight exp(-i^2 / (2 sigma^2)) (normalised to sum 1) and reads the pixel at
    (x + ceil(i cos a - 0.5), y + ceil(i sin a - 0.5)), a in degrees, y pointing down: a one-sided
    streak starting at the pixel itself.
    """
    width = int(2 * math.ceil(radius) + 1)
    weights = np.exp(-(np.arange(width, dtype=np.float64) ** 2) / (2.0 * sigma**2))
    weights /= weights.sum()
    centre = width - 1
    kernel = np.zeros((2 * width - 1, 2 * width - 1), dtype=np.float32)
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    for i, weight in enumerate(weights):
        dx, dy = math.ceil(i * cos - 0.5), math.ceil(i * sin - 0.5)
        kernel[centre + dy, centre + dx] += weight
    return kernel


def _motion_blur(x: np.ndarray, radius_sigma: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """ImageMagick's motion blur (`motion_blur_kernel`) at an angle ~ U(-45, 45) degrees, edges replicated.

    Deliberate difference: the original ran ImageMagick through Wand on a PNG round trip, in its
    quantum arithmetic; here it is one float `cv2.filter2D` with the same taps. As in the original,
    severities 3 (6, 2) and 4 (8, 2) blur alike: the taps radius 8 adds weigh exp(-13^2 / 8) < 1e-9.
    """
    kernel = motion_blur_kernel(*radius_sigma, angle=rng.uniform(-45.0, 45.0))
    return _keep_channel_axis(cv2.filter2D(x, -1, kernel, borderType=cv2.BORDER_REPLICATE))


def _contrast(x: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """(x - mean) * factor + mean, with the mean of each channel over the image."""
    mean = x.mean(axis=(0, 1), keepdims=True)
    return (x - mean) * factor + mean


def _brightness(x: np.ndarray, shift: float, rng: np.random.Generator) -> np.ndarray:
    """HSV value V += shift, clipped to [0, 1] (grey image: the grey value itself, since V = x there)."""
    if x.shape[2] == 1:
        return np.clip(x + shift, 0.0, 1.0)
    hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)  # float32: H in degrees, S and V in [0, 1]
    hsv[:, :, 2] = np.clip(hsv[:, :, 2] + shift, 0.0, 1.0)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def _saturate(x: np.ndarray, scale_shift: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """HSV saturation S = clip(S * scale + shift, 0, 1) of an RGB image (grey pixels have hue 0, so a positive
    shift tints them red, as in the original)."""
    scale, shift = scale_shift
    hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)
    hsv[:, :, 1] = np.clip(hsv[:, :, 1] * scale + shift, 0.0, 1.0)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def _jpeg_compression(x: np.ndarray, quality: int, rng: np.random.Generator) -> np.ndarray:
    """Encode as JPEG at `quality` (4:2:0 chroma, PIL's default) and decode, with OpenCV's libjpeg."""
    pixels = _to_uint8(x)
    if pixels.shape[2] == 3:
        pixels = pixels[:, :, ::-1]  # OpenCV encodes BGR
    options = [cv2.IMWRITE_JPEG_QUALITY, quality,
               cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420]  # fmt: skip
    ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(pixels), options)
    if not ok:
        raise ValueError(f"OpenCV could not JPEG-encode an image of shape {x.shape} at quality {quality}")
    decoded = _keep_channel_axis(cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED))
    if decoded.shape[2] == 3:
        decoded = decoded[:, :, ::-1]
    return decoded.astype(np.float32) * np.float32(1.0 / 255.0)


def _pixelate(x: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """Box-downsample to int(W * factor) x int(H * factor) (OpenCV's exact area weights; PIL's BOX averages the
    pixels whose centres fall in the footprint), then enlarge back by nearest pixel centre (PIL's BOX upsampling)."""
    height, width = x.shape[:2]
    small = _keep_channel_axis(
        cv2.resize(x, (max(1, int(width * factor)), max(1, int(height * factor))), interpolation=cv2.INTER_AREA)
    )
    rows = ((np.arange(height) + 0.5) * small.shape[0] / height).astype(np.int64)
    columns = ((np.arange(width) + 0.5) * small.shape[1] / width).astype(np.int64)
    return small[rows[:, None], columns[None, :]]


def plasma_fractal(size: int, decay: float, rng: np.random.Generator) -> np.ndarray:
    """Diamond-square height map (size, size) in [0, 1], periodic; `size` a power of two.

    The recursion of the original fog (after github.com/FLHerne/mapgen): at every halving of the
    step, square centres and then edge midpoints take the mean of their 4 neighbours (wrapping
    around) plus wibble * U(-wibble, wibble), wibble starting at 100 and divided by `decay` per level.
    """
    if size < 2 or size & (size - 1):
        raise ValueError(f"plasma_fractal size {size} is not valid; expected a power of two >= 2")
    height = np.zeros((size, size), dtype=np.float64)
    step, wibble = size, 100.0
    while step >= 2:
        half = step // 2
        corners = height[::step, ::step]  # (n, n)
        around = corners + np.roll(corners, -1, axis=0)
        around = around + np.roll(around, -1, axis=1)  # the 4 corners of each square
        height[half::step, half::step] = around / 4 + wibble * rng.uniform(-wibble, wibble, around.shape)
        centres = height[half::step, half::step]
        # midpoints on corner rows: corners left / right, centres below / above
        across = corners + np.roll(corners, -1, axis=1) + centres + np.roll(centres, 1, axis=0)
        height[::step, half::step] = across / 4 + wibble * rng.uniform(-wibble, wibble, across.shape)
        # midpoints on corner columns: corners above / below, centres right / left
        down = corners + np.roll(corners, -1, axis=0) + centres + np.roll(centres, 1, axis=1)
        height[half::step, ::step] = down / 4 + wibble * rng.uniform(-wibble, wibble, down.shape)
        step, wibble = half, wibble / decay
    height -= height.min()
    return height / height.max()


def _fog(x: np.ndarray, strength_decay: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """(x + strength * plasma) * max(x) / (max(x) + strength), the plasma fractal generated at the next power of
    two >= max(H, W) (32 for CIFAR) and cropped to (H, W).

    Deliberate difference: the fractal draws from `rng` rather than NumPy's global state, so the
    fog patterns of the released CIFAR-10-C files are not reproduced; their distribution is.
    """
    strength, decay = strength_decay
    height, width = x.shape[:2]
    size = 1 << max(1, math.ceil(math.log2(max(height, width))))
    fog = plasma_fractal(size, decay, rng)[:height, :width, None]  # (H, W, 1)
    peak = float(x.max())
    return (x + strength * fog) * (peak / (peak + strength))


_ALL = (
    Corruption("gaussian_noise", (0.04, 0.06, 0.08, 0.09, 0.10), _gaussian_noise),
    Corruption("shot_noise", (500, 250, 100, 75, 50), _shot_noise),
    Corruption("impulse_noise", (0.01, 0.02, 0.03, 0.05, 0.07), _impulse_noise),
    Corruption("gaussian_blur", (0.4, 0.6, 0.7, 0.8, 1.0), _gaussian_blur),
    Corruption("motion_blur", ((6, 1.0), (6, 1.5), (6, 2.0), (8, 2.0), (9, 2.5)), _motion_blur),
    Corruption("contrast", (0.75, 0.5, 0.4, 0.3, 0.15), _contrast),
    Corruption("brightness", (0.05, 0.1, 0.15, 0.2, 0.3), _brightness),
    Corruption("saturate", ((0.3, 0), (0.1, 0), (1.5, 0), (2.0, 0.1), (2.5, 0.2)), _saturate, is_colour_only=True),
    Corruption("jpeg_compression", (80, 65, 58, 50, 40), _jpeg_compression),
    Corruption("pixelate", (0.95, 0.9, 0.85, 0.75, 0.65), _pixelate),
    Corruption("fog", ((0.2, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75)), _fog),
)
CORRUPTIONS: dict[str, Corruption] = {corruption.name: corruption for corruption in _ALL}


def check_corruption_names(names: Sequence[str], key: str = "corruptions") -> None:
    """Raise ValueError naming `key` for the first name that is not in `CORRUPTIONS`."""
    for name in names:
        if name not in CORRUPTIONS:
            known = list(CORRUPTIONS)
            raise ValueError(f"{key}: unknown corruption '{name}'{did_you_mean(name, known)} known: {', '.join(known)}")


def corrupt(image: np.ndarray, name: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Corrupt a uint8 (H, W, C) image (C = 1 or 3) with CIFAR-10-C corruption `name` at `severity` 0..5
    (0 = an unchanged copy); returns uint8 (H, W, C), deterministic given `rng`."""
    check_corruption_names([name], key="corrupt")
    return CORRUPTIONS[name](image, severity, rng)

"""Rain rendering: an approximation of Tremblay et al., "Rain rendering for evaluating and
improving robustness to bad weather", IJCV 2020 (and its ICCV 2019 version by Halder et al.).

The paper composes two physical effects on a clear image, given its depth:

1. **Attenuation and in-scattering** (the fog-like veil of rain, Koschmieder's law)::

       I_rain = I · f_ext + (1 − f_ext) · A,    f_ext = exp(−β · d)
       β = 0.312 · R^0.67  km⁻¹                (R: rain rate in mm/h, d: depth in km)

   `A` is the atmospheric light. Here `A` is grey, at the mean ITU-R 601 luminance of the
   0.1 % brightest pixels of the clear image (at least one pixel): grey because scattering by
   drops, much larger than the wavelength, does not tint the veil, and because the brightest
   pixels of a scene without sky are often a saturated object. The transmission map
   `f_ext` is Gaussian-blurred (sigma `TRANSMISSION_BLUR` · min(H, W), at least 0.5 px) so
   depth edges do not print hard seams. Pixel values are treated as linear (no sRGB decoding).
   Without a depth map the depth is a row gradient, geometric from `ROW_DEPTH_RANGE_M[0]`
   = 1000 m at row 0 (top, far) to `ROW_DEPTH_RANGE_M[1]` = 5 m at the bottom row (near):
   d(y) = 1000 · (5 / 1000)^(y / (H − 1)) m, so the middle row is at ≈ 71 m (a street scene's
   ground plane, far at the horizon; a linear gradient would fog the whole upper half).
2. **Streaks** of falling drops, composited over the attenuated image (drops are near the camera).

What is approximated (and how):

- no particle simulation: the paper simulates drop positions, sizes (Marshall-Palmer) and
  fall velocities in 3-D and projects them with the camera's exposure time. Here streaks are
  procedural: `num = STREAK_DENSITY · (R / 25)^0.5 · H · W` (≥ 1) thin lines at uniform random
  positions, of length `STREAK_LENGTH · (R / 25)^0.3 · H` (≥ 2 px, each × U(0.5, 1.5)), all at one
  random angle per image drawn from U(−20°, 20°) around vertical (± `STREAK_ANGLE_JITTER_DEG`
  per streak). Density and length growing with R is what the simulation gives; the exponents
  are chosen by eye, not fitted.
- no photometric streak database (Garg & Nayar's oscillating-drop appearance): every streak is
  a line of random opacity U(`STREAK_OPACITY`) in a float layer, motion-blurred along the rain
  angle with a line kernel (`cv2.filter2D`, length half the streak length) so its ends taper.
- streak lighting: the paper lights each drop with an environment map; here a streak is
  screen-blended (out = I + α · (255 − I)) with α = streak · (`STREAK_MIN_LIGHT` + (1 −
  `STREAK_MIN_LIGHT`) · L), L the local brightness in [0, 1] (luminance of the attenuated image
  blurred with sigma `BRIGHTNESS_BLUR` · min(H, W)): streaks are bright where the scene is lit.
- no drop defocus by depth, no splashes, no wet-road reflections.

Randomness comes from `np.random.default_rng((seed, round(R · 1000), key))`: one image (the
caller's `key`, e.g. a stable id of the file) gives the same output for a seed and rate.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

EXTINCTION_COEFFICIENT = 0.312  # β = 0.312 · R^0.67 km⁻¹ (Tremblay et al. 2020)
EXTINCTION_EXPONENT = 0.67
ROW_DEPTH_RANGE_M: tuple[float, float] = (1000.0, 5.0)  # depth of row 0 (top) and of the bottom row
AIRLIGHT_FRACTION = 0.001  # the brightest 0.1 % of pixels give the atmospheric light
TRANSMISSION_BLUR = 0.01  # sigma of the transmission blur, fraction of min(H, W)
BRIGHTNESS_BLUR = 0.05  # sigma of the local-brightness blur, fraction of min(H, W)
REFERENCE_RATE = 25.0  # mm/h at which the streak constants below hold
STREAK_DENSITY = 0.002  # streaks per pixel at REFERENCE_RATE, growing as (R / 25)^0.5
STREAK_DENSITY_EXPONENT = 0.5
STREAK_LENGTH = 0.04  # streak length as a fraction of H at REFERENCE_RATE, growing as (R / 25)^0.3
STREAK_LENGTH_EXPONENT = 0.3
STREAK_ANGLE_DEG = 20.0  # the image's rain angle is U(−20°, 20°) from vertical
STREAK_ANGLE_JITTER_DEG = 2.0  # per-streak deviation (normal, this sigma)
STREAK_OPACITY: tuple[float, float] = (0.2, 0.5)
STREAK_MIN_LIGHT = 0.3  # streak opacity factor in a black region (1 in a white one)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, RGB order
_FIXED_POINT_BITS = 2  # cv2.line `shift`: quarter-pixel end points


def rain_extinction_per_km(rate_mm_h: float) -> float:
    """β = 0.312 · R^0.67 in km⁻¹ (0 for R = 0)."""
    return EXTINCTION_COEFFICIENT * rate_mm_h**EXTINCTION_EXPONENT


def row_gradient_depth(height: int, width: int) -> np.ndarray:
    """Default depth (H, W) float32 in metres: geometric from 1000 m (row 0) to 5 m (last row)."""
    far, near = ROW_DEPTH_RANGE_M
    position = np.arange(height, dtype=np.float64) / max(height - 1, 1)  # (H,) 0 at the top, 1 at the bottom
    rows = far * (near / far) ** position
    return np.broadcast_to(rows[:, None], (height, width)).astype(np.float32)


def estimate_airlight(image: np.ndarray) -> float:
    """Atmospheric light, a grey level: mean luminance of the brightest `AIRLIGHT_FRACTION` of pixels (≥ 1)."""
    luminance = image.reshape(-1, 3).astype(np.float32) @ _LUMA  # (H·W,)
    count = max(1, round(AIRLIGHT_FRACTION * luminance.size))
    return float(np.partition(luminance, luminance.size - count)[-count:].mean())


def _blur_sigma(fraction: float, height: int, width: int) -> float:
    return max(0.5, fraction * min(height, width))


def attenuate(image: np.ndarray, rate_mm_h: float, depth_m: np.ndarray) -> np.ndarray:
    """I · f_ext + (1 − f_ext) · A, f_ext = exp(−β · d) blurred: (H, W, 3) uint8 + (H, W) m → (H, W, 3) float32."""
    height, width = depth_m.shape
    transmission = np.exp(-rain_extinction_per_km(rate_mm_h) * depth_m.astype(np.float32) / 1000.0)  # (H, W)
    sigma = _blur_sigma(TRANSMISSION_BLUR, height, width)
    transmission = cv2.GaussianBlur(transmission.astype(np.float32), (0, 0), sigma)[:, :, None]  # (H, W, 1)
    return image.astype(np.float32) * transmission + (1.0 - transmission) * estimate_airlight(image)


def _line_kernel(length: int, angle: float) -> np.ndarray:
    """Normalised (K, K) float32 motion-blur kernel: a line of `length` px at `angle` (radians from vertical)."""
    size = length if length % 2 else length + 1
    kernel = np.zeros((size, size), dtype=np.float32)
    centre = size // 2
    dx, dy = math.sin(angle) * (length - 1) / 2, math.cos(angle) * (length - 1) / 2
    scale = 1 << _FIXED_POINT_BITS
    start = (round((centre - dx) * scale), round((centre - dy) * scale))
    end = (round((centre + dx) * scale), round((centre + dy) * scale))
    cv2.line(kernel, start, end, 1.0, 1, cv2.LINE_8, _FIXED_POINT_BITS)
    return kernel / kernel.sum()


def streak_layer(rng: np.random.Generator, rate_mm_h: float, height: int, width: int) -> np.ndarray:
    """Motion-blurred rain streaks (H, W) float32 in [0, 1] (opacity), density and length growing with R."""
    growth = rate_mm_h / REFERENCE_RATE
    num_streaks = max(1, round(STREAK_DENSITY * growth**STREAK_DENSITY_EXPONENT * height * width))
    length = max(2.0, STREAK_LENGTH * growth**STREAK_LENGTH_EXPONENT * height)
    angle = math.radians(rng.uniform(-STREAK_ANGLE_DEG, STREAK_ANGLE_DEG))
    angles = angle + np.radians(rng.normal(0.0, STREAK_ANGLE_JITTER_DEG, num_streaks))  # (N,)
    half = length * rng.uniform(0.5, 1.5, num_streaks) / 2  # (N,)
    centres = rng.uniform((-length, -length), (width + length, height + length), (num_streaks, 2))  # (N, 2) x, y
    offsets = np.stack([np.sin(angles), np.cos(angles)], axis=1) * half[:, None]  # (N, 2) x, y
    scale = 1 << _FIXED_POINT_BITS
    starts = np.rint((centres - offsets) * scale).astype(np.int64)
    ends = np.rint((centres + offsets) * scale).astype(np.int64)
    opacities = rng.uniform(*STREAK_OPACITY, num_streaks)
    layer = np.zeros((height, width), dtype=np.float32)
    for start, end, opacity in zip(starts.tolist(), ends.tolist(), opacities.tolist()):
        cv2.line(layer, tuple(start), tuple(end), opacity, 1, cv2.LINE_8, _FIXED_POINT_BITS)
    kernel = _line_kernel(max(3, round(length / 2)), angle)
    return np.clip(cv2.filter2D(layer, -1, kernel, borderType=cv2.BORDER_REFLECT), 0.0, 1.0)


def _check_inputs(image: np.ndarray, rate_mm_h: float, depth_m: np.ndarray | None, seed: int, key: int) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"render_rain expects an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    if not math.isfinite(rate_mm_h) or rate_mm_h < 0:
        raise ValueError(f"rain rate must be a finite number of mm/h >= 0, got {rate_mm_h}")
    if seed < 0 or key < 0:
        raise ValueError(f"seed and key must be integers >= 0, got seed={seed}, key={key}")
    if depth_m is None:
        return
    if depth_m.shape != image.shape[:2]:
        raise ValueError(f"depth map is {depth_m.shape} but the image is {image.shape[:2]}; expected (H, W) metres")
    if not np.isfinite(depth_m).all() or (depth_m < 0).any():
        raise ValueError("depth map must hold finite depths >= 0 in metres")


def render_rain(
    image: np.ndarray, rate_mm_h: float, *, depth_m: np.ndarray | None = None, seed: int = 0, key: int = 0
) -> np.ndarray:
    """The image under rain of `rate_mm_h` mm/h: attenuation + airlight, then streaks (module docstring).

    Args:
        image: (H, W, 3) uint8 RGB clear image.
        rate_mm_h: rain rate R >= 0; R = 0 returns a copy of `image`.
        depth_m: (H, W) depth in metres; None uses `row_gradient_depth` (1000 m at the top to 5 m at the bottom).
        seed, key: non-negative ints; the streaks are drawn from `default_rng((seed, round(R · 1000), key))`,
            so pass a stable per-image `key` (e.g. the image index or a hash of its name) for distinct streaks.

    Returns:
        (H, W, 3) uint8 RGB, clipped to 0..255.
    """
    _check_inputs(image, rate_mm_h, depth_m, seed, key)
    if rate_mm_h == 0:
        return image.copy()
    height, width = image.shape[:2]
    depth = row_gradient_depth(height, width) if depth_m is None else depth_m
    foggy = attenuate(image, rate_mm_h, depth)  # (H, W, 3) float32
    rng = np.random.default_rng((seed, round(rate_mm_h * 1000), key))
    streaks = streak_layer(rng, rate_mm_h, height, width)  # (H, W)
    sigma = _blur_sigma(BRIGHTNESS_BLUR, height, width)
    brightness = cv2.GaussianBlur(foggy @ _LUMA, (0, 0), sigma) / 255.0  # (H, W) in [0, 1]
    alpha = streaks * (STREAK_MIN_LIGHT + (1.0 - STREAK_MIN_LIGHT) * np.clip(brightness, 0.0, 1.0))
    rainy = foggy + alpha[:, :, None] * (255.0 - foggy)  # screen blend with white
    return np.clip(np.rint(rainy), 0, 255).astype(np.uint8)

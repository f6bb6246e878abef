"""CIFAR-10-C corruptions: severity 0 is the identity, PSNR falls with severity, formulas by hand,
shapes for 1 and 3 channels, determinism, clear errors."""

from __future__ import annotations

import itertools
import math

import cv2
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from pretrainlab.data.transforms.corruptions import CORRUPTIONS, corrupt, motion_blur_kernel, plasma_fractal

GREY_NAMES = [name for name in CORRUPTIONS if name != "saturate"]


def textured_image(seed: int, channels: int = 3, size: int = 32) -> np.ndarray:
    """(S, S, C) uint8 within 30..225: smooth random colour blobs (an 8 x 8 grid, bicubic) plus a fine grating,
    so blur, pixelation and JPEG all remove detail and nothing clips at the clean image."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0.0, 1.0, size=(8, 8, channels)).astype(np.float32)
    smooth = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC).reshape(size, size, channels)
    y, x = np.mgrid[:size, :size]
    grating = 0.5 + 0.5 * np.sin(2 * np.pi * (0.23 * x + 0.11 * y))
    return np.rint(30 + 195 * np.clip(0.7 * smooth + 0.3 * grating[:, :, None], 0, 1)).astype(np.uint8)


def psnr_by_severity(name: str) -> list[float]:
    """PSNR (dB) of severities 1..5 from the mean squared error over 4 images x 3 seeds; a seed gives the same
    random draws at every severity (e.g. the motion-blur angle)."""
    psnr = []
    for severity in range(1, 6):
        errors = []
        for image_seed in range(4):
            clean = textured_image(image_seed)
            for seed in range(3):
                corrupted = corrupt(clean, name, severity, np.random.default_rng(seed))
                errors.append(np.mean((corrupted.astype(np.float64) - clean) ** 2))
        psnr.append(10 * math.log10(255.0**2 / float(np.mean(errors))))
    return psnr


@pytest.mark.parametrize("channels", [1, 3])
def test_severity_zero_is_an_unchanged_copy(channels: int) -> None:
    clean = textured_image(0, channels)
    for name in CORRUPTIONS if channels == 3 else GREY_NAMES:
        result = corrupt(clean, name, 0, np.random.default_rng(0))
        assert result is not clean and result.dtype == np.uint8
        np.testing.assert_array_equal(result, clean, err_msg=name)


@pytest.mark.parametrize("name", [name for name in CORRUPTIONS if name not in ("motion_blur", "saturate")])
def test_psnr_falls_strictly_with_severity(name: str) -> None:
    psnr = psnr_by_severity(name)
    assert all(later < earlier for earlier, later in itertools.pairwise(psnr)), (name, psnr)
    assert psnr[-1] < 35.0, (name, psnr)  # severity 5 is a visible change


def test_motion_blur_psnr_falls_and_severities_3_and_4_coincide() -> None:
    """(6, 2) and (8, 2): the same sigma, and the 4 extra taps of radius 8 weigh exp(-13^2 / 8) < 1e-9 — in
    CIFAR-10-C's constants severity 4 blurs like 3."""
    psnr = psnr_by_severity("motion_blur")
    assert psnr[0] > psnr[1] > psnr[2] > psnr[4] and psnr[3] > psnr[4], psnr
    assert psnr[3] == pytest.approx(psnr[2], abs=0.01)


def test_saturate_desaturates_at_1_2_and_oversaturates_at_3_4_5() -> None:
    """Scale 0.3 then 0.1 (towards grey), then 1.5, 2 + 0.1, 2.5 + 0.2: two monotone runs, not one."""
    psnr = psnr_by_severity("saturate")
    assert psnr[0] > psnr[1] and psnr[2] > psnr[3] > psnr[4], psnr
    assert psnr[2] > psnr[1]  # x1.5 changes less than x0.1


@pytest.mark.parametrize("channels", [1, 3])
def test_every_corruption_keeps_shape_and_dtype(channels: int) -> None:
    clean = textured_image(1, channels, size=40)  # not a power of two: fog crops a 64-px fractal
    for name in CORRUPTIONS if channels == 3 else GREY_NAMES:
        for severity in range(1, 6):
            result = corrupt(clean, name, severity, np.random.default_rng(severity))
            assert result.shape == clean.shape and result.dtype == np.uint8, (name, severity)


def test_a_seed_gives_one_output_and_another_seed_another() -> None:
    clean = textured_image(2)
    for name in CORRUPTIONS:
        first = corrupt(clean, name, 3, np.random.default_rng(7))
        np.testing.assert_array_equal(first, corrupt(clean, name, 3, np.random.default_rng(7)), err_msg=name)
        if name in ("gaussian_noise", "shot_noise", "impulse_noise", "motion_blur", "fog"):
            assert not np.array_equal(first, corrupt(clean, name, 3, np.random.default_rng(8))), name


def test_gaussian_noise_has_the_severity_std() -> None:
    clean = np.full((128, 128, 3), 128, dtype=np.uint8)
    for severity, std in enumerate((0.04, 0.06, 0.08, 0.09, 0.10), start=1):
        noise = corrupt(clean, "gaussian_noise", severity, np.random.default_rng(0)).astype(np.float64) - 128
        assert noise.std() == pytest.approx(255 * std, rel=0.02), severity  # 4 sigma stays within 0..255
        assert abs(noise.mean()) < 0.3


def test_shot_noise_is_poisson_with_the_severity_photon_count() -> None:
    """A pixel at 128 / 255 with c = 100 photons: std sqrt(x c) / c, i.e. 255 sqrt(0.502 / 100) = 18.07 levels."""
    clean = np.full((128, 128, 3), 128, dtype=np.uint8)
    noisy = corrupt(clean, "shot_noise", 3, np.random.default_rng(0)).astype(np.float64)
    assert noisy.std() == pytest.approx(255 * math.sqrt(128 / 255 / 100), rel=0.02)
    assert noisy.mean() == pytest.approx(128, abs=0.5)


def test_impulse_noise_sets_the_severity_fraction_to_black_or_white() -> None:
    clean = np.full((128, 128, 3), 128, dtype=np.uint8)
    noisy = corrupt(clean, "impulse_noise", 5, np.random.default_rng(0))  # amount 0.07, per pixel and channel
    assert set(np.unique(noisy)) == {0, 128, 255}
    assert (noisy == 0).mean() == pytest.approx(0.035, abs=0.003)
    assert (noisy == 255).mean() == pytest.approx(0.035, abs=0.003)


def test_contrast_scales_the_distance_to_each_channel_mean() -> None:
    clean = textured_image(3)
    x = clean / 255.0
    mean = x.mean(axis=(0, 1))  # one mean per channel
    expected = np.rint(np.clip((x - mean) * 0.4 + mean, 0, 1) * 255)  # severity 3: c = 0.4
    assert np.abs(corrupt(clean, "contrast", 3, np.random.default_rng(0)) - expected).max() <= 1


def test_brightness_adds_to_the_hsv_value() -> None:
    """V = max(R, G, B) += 0.15 at fixed H and S scales each channel by (V + 0.15) / V; grey: x + 0.15."""
    clean = textured_image(4)
    x = clean / 255.0
    value = x.max(axis=2, keepdims=True)
    expected = np.rint(x * np.minimum(value + 0.15, 1.0) / value * 255)
    assert np.abs(corrupt(clean, "brightness", 3, np.random.default_rng(0)) - expected).max() <= 1
    grey = textured_image(4, channels=1)
    expected_grey = np.rint(np.clip(grey / 255.0 + 0.15, 0, 1) * 255)
    assert np.abs(corrupt(grey, "brightness", 3, np.random.default_rng(0)) - expected_grey).max() <= 1


def test_saturate_scales_the_distance_to_the_hsv_value() -> None:
    """S *= 0.1 at fixed H and V moves each channel to V - 0.1 (V - x)."""
    clean = textured_image(5)
    x = clean / 255.0
    value = x.max(axis=2, keepdims=True)
    expected = np.rint((value - 0.1 * (value - x)) * 255)
    assert np.abs(corrupt(clean, "saturate", 2, np.random.default_rng(0)) - expected).max() <= 1


def test_gaussian_blur_matches_scikit_images_filter() -> None:
    """skimage.filters.gaussian is scipy's gaussian_filter with mode 'nearest', truncate 4."""
    clean = textured_image(6)
    for severity, sigma in enumerate((0.4, 0.6, 0.7, 0.8, 1.0), start=1):
        reference = gaussian_filter(clean / 255.0, sigma=(sigma, sigma, 0), mode="nearest", truncate=4.0)
        blurred = corrupt(clean, "gaussian_blur", severity, np.random.default_rng(0))
        assert np.abs(blurred - np.rint(reference * 255)).max() <= 1, severity


def test_motion_blur_kernel_is_imagemagicks_half_gaussian_along_the_angle() -> None:
    weights = np.exp(-(np.arange(13) ** 2) / 2.0)  # radius 6 -> 13 taps, sigma 1
    weights /= weights.sum()
    kernel = motion_blur_kernel(6, 1.0, angle=0.0)  # (25, 25), centre 12
    assert kernel.shape == (25, 25) and kernel.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(kernel[12, 12:], weights, rtol=1e-6)  # taps to the right: x + i
    assert np.count_nonzero(kernel) == 13
    diagonal = motion_blur_kernel(6, 1.0, angle=45.0)  # tap i at (ceil(0.707 i - 0.5), same)
    for i in range(13):
        offset = math.ceil(i * math.cos(math.pi / 4) - 0.5)
        assert diagonal[12 + offset, 12 + offset] >= weights[i] - 1e-7


def test_motion_blur_streaks_a_point_away_from_the_angle() -> None:
    """A white point is read by every pixel whose tap i reaches it: the output at (x0 - dx_i, y0 - dy_i) sums
    255 w_i over the taps of that offset; 255 * 0.5701 = 145 at the point itself (severity 1: w_0 = 1 / sum
    exp(-i^2 / 2), and tap 1 always steps one pixel in x)."""
    image = np.zeros((32, 32, 1), dtype=np.uint8)
    image[16, 16] = 255
    angle = math.radians(np.random.default_rng(3).uniform(-45.0, 45.0))  # the first draw of the corruption's rng
    blurred = corrupt(image, "motion_blur", 1, np.random.default_rng(3))[:, :, 0]
    weights = np.exp(-(np.arange(13) ** 2) / 2.0) / np.exp(-(np.arange(13) ** 2) / 2.0).sum()
    expected = np.zeros((32, 32))
    for i, weight in enumerate(weights):
        dx, dy = math.ceil(i * math.cos(angle) - 0.5), math.ceil(i * math.sin(angle) - 0.5)
        expected[16 - dy, 16 - dx] += 255 * weight
    assert np.abs(blurred - np.rint(expected)).max() <= 1
    assert blurred[16, 16] == 145 == round(255 * weights[0])


def test_pixelate_keeps_the_severity_resolution() -> None:
    """Severity 5 (0.65): 32 px -> int(20.8) = 20 blocks a side, each shown as whole pixels."""
    clean = textured_image(7)
    pixelated = corrupt(clean, "pixelate", 5, np.random.default_rng(0))
    assert np.unique(pixelated, axis=1).shape[1] <= 20 and np.unique(pixelated, axis=0).shape[0] <= 20
    flat = np.full((32, 32, 3), 77, dtype=np.uint8)
    np.testing.assert_array_equal(corrupt(flat, "pixelate", 5, np.random.default_rng(0)), flat)


def test_jpeg_compression_is_an_opencv_round_trip_at_the_severity_quality() -> None:
    clean = textured_image(8)
    options = [cv2.IMWRITE_JPEG_QUALITY, 40, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420]
    encoded = cv2.imencode(".jpg", np.ascontiguousarray(clean[:, :, ::-1]), options)[1]
    expected = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[:, :, ::-1]
    np.testing.assert_array_equal(corrupt(clean, "jpeg_compression", 5, np.random.default_rng(0)), expected)


def test_fog_on_a_flat_image_follows_the_formula() -> None:
    """x = 128/255 everywhere: (x + c p) x / (x + c) runs from x^2 / (x + c) where the fractal p is 0 to x where
    it is 1; severity 5, c = 1.5: 255 * 0.50196^2 / 2.00196 = 32.1 .. 128."""
    flat = np.full((32, 32, 3), 128, dtype=np.uint8)
    fog = corrupt(flat, "fog", 5, np.random.default_rng(0))
    x = 128 / 255
    assert fog.min() == round(255 * x * x / (x + 1.5)) == 32
    assert fog.max() == 128
    assert (fog == fog[:, :, :1]).all()  # one fractal for every channel


def test_plasma_fractal_spans_0_to_1_and_needs_a_power_of_two() -> None:
    fractal = plasma_fractal(32, 2.0, np.random.default_rng(0))
    assert fractal.shape == (32, 32) and fractal.min() == 0.0 and fractal.max() == 1.0
    with pytest.raises(ValueError, match="power of two"):
        plasma_fractal(24, 2.0, np.random.default_rng(0))


def test_bad_requests_are_refused_clearly() -> None:
    clean = textured_image(9)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown corruption 'fgo'; did you mean 'fog'"):
        corrupt(clean, "fgo", 1, rng)
    with pytest.raises(ValueError, match=r"severity 6 of corruption 'fog' is not valid; expected an integer in 0\.\.5"):
        corrupt(clean, "fog", 6, rng)
    with pytest.raises(ValueError, match="severity -1"):
        corrupt(clean, "contrast", -1, rng)
    with pytest.raises(ValueError, match=r"uint8 \(H, W, C\) image with C = 1 or 3, got float32"):
        corrupt(clean.astype(np.float32), "fog", 1, rng)
    with pytest.raises(ValueError, match=r"got uint8 \(32, 32, 4\)"):
        corrupt(np.zeros((32, 32, 4), dtype=np.uint8), "fog", 1, rng)
    with pytest.raises(ValueError, match="'saturate' needs an RGB .* no colour saturation"):
        corrupt(textured_image(9, channels=1), "saturate", 1, rng)

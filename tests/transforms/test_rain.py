"""Rain rendering: the attenuation formula by hand, monotonic in rate and depth, determinism, R = 0 identity."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from pretrainlab.data.transforms.rain import (
    attenuate,
    estimate_airlight,
    rain_extinction_per_km,
    render_rain,
    row_gradient_depth,
    streak_layer,
)

RATES = (25.0, 50.0, 100.0, 200.0)


def textured_image(size: int = 128, seed: int = 0) -> np.ndarray:
    """(S, S, 3) uint8: 8-px grey blocks of random brightness 0..255."""
    blocks = np.random.default_rng(seed).integers(0, 256, size=(size // 8, size // 8), dtype=np.uint8)
    grey = np.kron(blocks, np.ones((8, 8), dtype=np.uint8))
    return np.repeat(grey[:, :, None], 3, axis=2)


def test_extinction_coefficient() -> None:
    assert rain_extinction_per_km(1.0) == pytest.approx(0.312)
    assert rain_extinction_per_km(100.0) == pytest.approx(0.312 * 100.0**0.67)  # ≈ 6.83 km⁻¹
    assert rain_extinction_per_km(100.0) == pytest.approx(6.826, abs=1e-3)


def test_airlight_is_the_brightest_pixels_luminance() -> None:
    image = np.full((32, 32, 3), 40, dtype=np.uint8)
    image[5, 7] = (255, 0, 0)  # 0.1 % of 1024 pixels rounds to one: the brightest (luminance 0.299 · 255)
    assert estimate_airlight(image) == pytest.approx(0.299 * 255, abs=1e-3)


def test_attenuation_matches_koschmieder_by_hand() -> None:
    """Black pixels at 200 m under 100 mm/h: 255 · (1 − exp(−6.826 · 0.2)) ≈ 189.9 (airlight = the white half)."""
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    image[:, 16:] = 255
    foggy = attenuate(image, 100.0, np.full((32, 32), 200.0, dtype=np.float32))
    expected = 255.0 * (1.0 - math.exp(-rain_extinction_per_km(100.0) * 0.2))
    np.testing.assert_allclose(foggy[:, :16], expected, atol=1e-3)
    np.testing.assert_allclose(foggy[:, 16:], 255.0, atol=1e-3)
    assert expected == pytest.approx(189.9, abs=0.1)


def test_zero_rate_returns_the_image() -> None:
    image = textured_image()
    out = render_rain(image, 0.0, seed=3, key=1)
    np.testing.assert_array_equal(out, image)
    assert out is not image


def test_deterministic_per_seed_and_key() -> None:
    image = textured_image(64)
    first = render_rain(image, 50.0, seed=1, key=7)
    assert first.dtype == np.uint8 and first.shape == image.shape
    assert first.tobytes() == render_rain(image, 50.0, seed=1, key=7).tobytes()
    assert not np.array_equal(first, render_rain(image, 50.0, seed=2, key=7))
    assert not np.array_equal(first, render_rain(image, 50.0, seed=1, key=8))


def test_contrast_falls_as_the_rate_grows() -> None:
    image = textured_image()
    stds = [float(image.std())] + [float(render_rain(image, rate, seed=0, key=0).std()) for rate in RATES]
    assert all(a > b for a, b in itertools.pairwise(stds)), stds


def test_far_rows_are_more_attenuated_than_near_rows() -> None:
    image = textured_image()
    out = render_rain(image, 50.0, seed=0, key=0).astype(np.float64)
    kept_far = out[:32].std() / image[:32].std()  # top rows: row-gradient depth 1000 m .. 260 m
    kept_near = out[-32:].std() / image[-32:].std()  # bottom rows: 19 m .. 5 m
    assert kept_far < 0.5 and kept_near > 0.9, (kept_far, kept_near)
    depth = row_gradient_depth(128, 128)
    assert depth[0, 0] == pytest.approx(1000.0) and depth[-1, 0] == pytest.approx(5.0)
    assert np.all(np.diff(depth[:, 0]) < 0)


def test_given_depth_replaces_the_row_gradient() -> None:
    """A depth map far on the left and near on the right: the left loses more contrast, whatever the row."""
    image = textured_image()
    depth = np.full((128, 128), 5.0, dtype=np.float32)
    depth[:, :64] = 500.0
    out = attenuate(image, 100.0, depth)
    assert out[:, :56].std() < 0.2 * image[:, :56].std()
    assert out[:, 72:].std() > 0.9 * image[:, 72:].std()


def test_streaks_grow_with_the_rate() -> None:
    amounts = [float(streak_layer(np.random.default_rng(0), rate, 128, 128).sum()) for rate in RATES]
    assert all(a < b for a, b in itertools.pairwise(amounts)), amounts
    layer = streak_layer(np.random.default_rng(0), 25.0, 128, 128)
    assert layer.min() >= 0.0 and layer.max() <= 1.0 and layer.max() > 0.1


@pytest.mark.parametrize(
    "image, rate, depth, message",
    [
        (np.zeros((8, 8), dtype=np.uint8), 25.0, None, "uint8 RGB"),
        (np.zeros((8, 8, 3), dtype=np.float32), 25.0, None, "uint8 RGB"),
        (np.zeros((8, 8, 3), dtype=np.uint8), -1.0, None, "mm/h >= 0"),
        (np.zeros((8, 8, 3), dtype=np.uint8), math.nan, None, "mm/h >= 0"),
        (np.zeros((8, 8, 3), dtype=np.uint8), 25.0, np.ones((8, 9)), r"\(8, 9\)"),
        (np.zeros((8, 8, 3), dtype=np.uint8), 25.0, -np.ones((8, 8)), "finite depths"),
    ],
)
def test_bad_inputs_raise(image: np.ndarray, rate: float, depth: np.ndarray | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render_rain(image, rate, depth_m=depth)


def test_negative_key_raises() -> None:
    with pytest.raises(ValueError, match="key=-1"):
        render_rain(np.zeros((8, 8, 3), dtype=np.uint8), 25.0, key=-1)

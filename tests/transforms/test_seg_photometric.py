"""Photometric distortion: bit-exact against MMSeg 1.2.2 outputs, draw order, and op statistics."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import load_reference

from pretrainlab.data.transforms.photometric import (
    affine_lut,
    photometric_distortion,
    random_photometric_distortion,
    sample_photometric_params,
)


def case_params(ref: np.lib.npyio.NpzFile, i: int) -> dict:
    def get(key: str) -> np.ndarray:
        return ref[f"case{i}/{key}"]

    return {
        "beta": float(get("brightness_beta")) if int(get("brightness_on")) else None,
        "mode": int(get("mode")),
        "alpha": float(get("contrast_alpha")) if int(get("contrast_on")) else None,
        "alpha_s": float(get("saturation_alpha")) if int(get("saturation_on")) else None,
        "delta": int(get("hue_delta")) if int(get("hue_on")) else None,
    }


class ScriptedRng:
    """Replays the draws saved in the reference, checking each call's kind and arguments."""

    def __init__(self, draws: np.ndarray, kinds: np.ndarray, args: np.ndarray) -> None:
        self.script = list(zip(draws.tolist(), [str(k) for k in kinds], [str(a) for a in args]))

    def _next(self, kind: str, args: tuple) -> float:
        assert self.script, f"extra draw {kind}{args}"
        value, expected_kind, expected_args = self.script.pop(0)
        assert (kind, str(args)) == (expected_kind, expected_args)
        return value

    def integers(self, *args: int) -> int:
        return int(self._next("randint", args))

    def uniform(self, *args: float) -> float:
        return self._next("uniform", args)


@pytest.mark.reference
def test_deterministic_core_matches_mmseg_exactly() -> None:
    ref = load_reference("photometric")
    for i in range(int(ref["n_cases"])):
        out = photometric_distortion(ref[f"case{i}/img"], **case_params(ref, i))
        np.testing.assert_array_equal(out, ref[f"case{i}/out"], err_msg=str(ref[f"case{i}/name"]))


@pytest.mark.reference
def test_sampling_consumes_draws_in_mmseg_order() -> None:
    ref = load_reference("photometric")
    for i in range(int(ref["n_cases"])):
        rng = ScriptedRng(ref[f"case{i}/draws"], ref[f"case{i}/draw_kinds"], ref[f"case{i}/draw_args"])
        params = sample_photometric_params(rng)
        assert not rng.script, f"case {i}: {len(rng.script)} draws left unused"
        expected = case_params(ref, i)
        assert params.mode == expected["mode"]
        for key in ("beta", "alpha", "alpha_s", "delta"):
            assert getattr(params, key) == expected[key], (i, key)
        rng = ScriptedRng(ref[f"case{i}/draws"], ref[f"case{i}/draw_kinds"], ref[f"case{i}/draw_args"])
        np.testing.assert_array_equal(random_photometric_distortion(ref[f"case{i}/img"], rng), ref[f"case{i}/out"])


@pytest.mark.reference
def test_opencv_hsv_conversion_matches_reference() -> None:
    ref = load_reference("photometric")
    hsv = cv2.cvtColor(ref["hsv_check/img_bgr"], cv2.COLOR_BGR2HSV)
    np.testing.assert_array_equal(hsv, ref["hsv_check/hsv"])
    np.testing.assert_array_equal(cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR), ref["hsv_check/bgr_roundtrip"])


def test_lut_equals_elementwise_float32_convert() -> None:
    image = np.arange(256, dtype=np.uint8).reshape(16, 16)
    for alpha, beta in [(1.0, 12.9), (1.0, -31.99), (0.5, 0.0), (1.4999, 0.0), (1.2345, 0.0)]:
        direct = np.clip(image.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)
        np.testing.assert_array_equal(affine_lut(alpha, beta)[image], direct)
    assert affine_lut(beta=12.9)[0] == 12  # truncation, not rounding


def test_contrast_position_depends_on_mode() -> None:
    image = np.random.default_rng(0).integers(0, 256, (8, 9, 3), dtype=np.uint8)
    first = photometric_distortion(image, None, 1, 1.4, 0.7, None)
    last = photometric_distortion(image, None, 0, 1.4, 0.7, None)
    assert not np.array_equal(first, last)
    contrast = np.clip(image.astype(np.float32) * 1.4, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(first, photometric_distortion(contrast, None, 1, None, 0.7, None))


def test_no_op_returns_input_unchanged_and_input_is_never_modified() -> None:
    image = np.random.default_rng(1).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    keep = image.copy()
    assert photometric_distortion(image, None, 0, None, None, None) is image
    photometric_distortion(image, 10.0, 0, 0.8, 1.2, 5)
    np.testing.assert_array_equal(image, keep)
    flipped = image[:, ::-1]  # negative-stride views are accepted
    np.testing.assert_array_equal(
        photometric_distortion(flipped, 3.0, 1, None, None, 4),
        photometric_distortion(np.ascontiguousarray(flipped), 3.0, 1, None, None, 4),
    )


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="uint8 BGR"):
        photometric_distortion(np.zeros((4, 4), np.uint8), None, 0, None, None, None)
    with pytest.raises(ValueError, match="mode must be"):
        photometric_distortion(np.zeros((4, 4, 3), np.uint8), None, 2, None, None, None)


def test_op_probabilities_and_parameter_ranges() -> None:
    rng = np.random.default_rng(2024)
    n = 20000
    draws = [sample_photometric_params(rng) for _ in range(n)]
    tol = 0.02  # 5.6 standard deviations of a rate of 0.5 over 20000 draws

    def rate(flags: list[bool]) -> float:
        return float(np.mean(flags))

    assert abs(rate([d.beta is not None for d in draws]) - 0.5) < tol
    assert abs(rate([d.mode == 1 for d in draws]) - 0.5) < tol
    assert abs(rate([d.alpha_s is not None for d in draws]) - 0.5) < tol
    assert abs(rate([d.delta is not None for d in draws]) - 0.5) < tol
    for mode in (0, 1):  # contrast fires half the time in either position
        assert abs(rate([d.alpha is not None for d in draws if d.mode == mode]) - 0.5) < tol

    betas = np.array([d.beta for d in draws if d.beta is not None])
    assert betas.min() >= -32 and betas.max() < 32 and betas.max() > 31 and betas.min() < -31
    assert abs(betas.mean()) < 0.6 and abs(betas.std() - 64 / np.sqrt(12)) < 0.5
    for key in ("alpha", "alpha_s"):
        values = np.array([getattr(d, key) for d in draws if getattr(d, key) is not None])
        assert values.min() >= 0.5 and values.max() < 1.5 and values.min() < 0.51 and values.max() > 1.49
        assert abs(values.mean() - 1.0) < 0.01
    deltas = np.array([d.delta for d in draws if d.delta is not None])
    assert set(deltas.tolist()) == set(range(-18, 18))  # 18 is excluded, as numpy's randint(-18, 18)
    assert abs(deltas.mean() + 0.5) < 0.25


PARAM_GRID = [  # (beta, mode, alpha, alpha_s, delta): every op alone, mixed, and nothing
    (20.5, 0, None, None, None), (None, 1, 1.3, None, None), (None, 0, 0.6, None, None), (None, 0, None, 1.4, None),
    (None, 0, None, None, 9), (-12.0, 1, 1.2, 0.7, -5), (7.0, 0, 0.8, 1.3, 11), (None, 0, None, None, None),
]  # fmt: skip


@pytest.mark.parametrize("params", PARAM_GRID)
def test_one_channel_gets_brightness_and_contrast_only(params: tuple) -> None:
    """A grey BGR image stays grey under saturation and hue (S = 0), so its distortion equals the 1-channel one,
    which applies brightness and contrast only."""
    gray = np.random.default_rng(5).integers(0, 256, (9, 11, 1), dtype=np.uint8)
    out = photometric_distortion(gray, *params)
    assert out.shape == (9, 11, 1) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :, 0], photometric_distortion(np.repeat(gray, 3, axis=2), *params)[:, :, 0])
    beta, mode, alpha, _, _ = params
    expected = gray if beta is None else affine_lut(beta=beta)[gray]
    np.testing.assert_array_equal(out, expected if alpha is None else affine_lut(alpha=alpha)[expected])


@pytest.mark.parametrize("params", PARAM_GRID)
def test_four_channels_distort_the_colour_and_keep_the_4th(params: tuple) -> None:
    rng = np.random.default_rng(6)
    image = rng.integers(0, 256, (9, 11, 4), dtype=np.uint8)
    out = photometric_distortion(image, *params)
    assert out.shape == (9, 11, 4)
    np.testing.assert_array_equal(out[:, :, 3], image[:, :, 3])
    np.testing.assert_array_equal(out[:, :, :3], photometric_distortion(np.ascontiguousarray(image[:, :, :3]), *params))

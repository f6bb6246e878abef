"""Image reading: RGB order, channel policies, 16-bit scaling, broken files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pretrainlab.data.formats._robust import BrokenSampleError
from pretrainlab.data.images import decode_image, read_image, scale_to_uint8, to_rgb


def test_colour_file_is_returned_in_rgb_order(tmp_path: Path) -> None:
    bgr = np.zeros((4, 5, 3), dtype=np.uint8)
    bgr[..., 2] = 255  # red in OpenCV's BGR order
    cv2.imwrite(str(tmp_path / "red.png"), bgr)
    image = read_image(tmp_path / "red.png")
    assert image.shape == (4, 5, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[0, 0], [255, 0, 0])


def test_alpha_is_dropped(tmp_path: Path) -> None:
    bgra = np.zeros((3, 3, 4), dtype=np.uint8)
    bgra[..., 0], bgra[..., 3] = 200, 10  # blue, nearly transparent
    cv2.imwrite(str(tmp_path / "blue.png"), bgra)
    np.testing.assert_array_equal(read_image(tmp_path / "blue.png")[1, 1], [0, 0, 200])


def test_16_bit_grayscale_is_scaled_and_copied(tmp_path: Path) -> None:
    gray = np.array([[0, 257, 1000], [30000, 65535, 128]], dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "thermal.png"), gray)
    full = read_image(tmp_path / "thermal.png")
    assert full.shape == (2, 3, 3)
    np.testing.assert_array_equal(full[..., 0], [[0, 1, 4], [117, 255, 0]])  # round(v / 257)
    np.testing.assert_array_equal(full[..., 0], full[..., 2])
    stretched = read_image(tmp_path / "thermal.png", uint16_scaling="minmax")
    np.testing.assert_array_equal(stretched[..., 1], np.rint(gray / 65535 * 255).astype(np.uint8))


def test_minmax_of_a_narrow_band() -> None:
    band = np.array([[1000, 1010], [1020, 1000]], dtype=np.uint16)
    np.testing.assert_array_equal(scale_to_uint8(band, "minmax"), [[0, 128], [255, 0]])
    np.testing.assert_array_equal(scale_to_uint8(np.full((2, 2), 7, np.uint16), "minmax"), 0)


def test_pick_channel_policy() -> None:
    rgb = np.stack([np.full((2, 2), value, np.uint8) for value in (10, 20, 30)], axis=2)
    np.testing.assert_array_equal(to_rgb(rgb, "pick:1"), np.full((2, 2, 3), 20))
    np.testing.assert_array_equal(to_rgb(rgb, "copy"), rgb)
    with pytest.raises(ValueError, match="picks channel 3 of an image with 3"):
        to_rgb(rgb, "pick:3")
    with pytest.raises(ValueError, match="channel policy 'first' is not valid"):
        to_rgb(rgb, "first")


def test_unsupported_dtype_and_scaling_raise() -> None:
    with pytest.raises(ValueError, match="float32"):
        scale_to_uint8(np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="uint16_scaling 'log'"):
        scale_to_uint8(np.zeros((2, 2), np.uint16), "log")  # type: ignore[arg-type]


def test_broken_files_raise_broken_sample_error(tmp_path: Path) -> None:
    ok, encoded = cv2.imencode(".jpg", np.full((16, 16, 3), 90, np.uint8))
    assert ok
    cases = {"empty": b"", "garbage": b"this is not an image" * 10, "truncated": encoded.tobytes()[: encoded.size // 2]}
    for data in cases.values():
        with pytest.raises(BrokenSampleError):
            decode_image(data)
    with pytest.raises(BrokenSampleError, match="cannot read"):
        read_image(tmp_path / "missing.png")

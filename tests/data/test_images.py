"""Image reading: RGB order, channel counts and policies, 16-bit scaling (full, minmax, window), broken files;
default normalisation statistics per channel count."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pretrainlab.data.formats._robust import BrokenSampleError, ChannelMismatchError
from pretrainlab.data.images import (
    check_mean_std,
    decode_image,
    default_mean_std,
    read_image,
    scale_to_uint8,
    select_channels,
)


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
    np.testing.assert_array_equal(select_channels(rgb, 3, "pick:1"), np.full((2, 2, 3), 20))
    np.testing.assert_array_equal(select_channels(rgb, 3, "copy"), rgb)
    with pytest.raises(ChannelMismatchError, match="picks channel 3 of an image with 3"):
        select_channels(rgb, 3, "pick:3")
    with pytest.raises(ValueError, match="channel policy 'first' is not valid"):
        select_channels(rgb, 3, "first")
    with pytest.raises(ValueError, match=r"channels=2 is not valid; expected one of \(1, 3, 4\)"):
        select_channels(rgb, 2)


def _write_rgb(path: Path, values: tuple[int, ...]) -> None:
    """A 2x3 file whose RGB(A) channel i holds values[i] everywhere (written in OpenCV's BGR(A) order)."""
    rgb = np.broadcast_to(np.asarray(values, np.uint8), (2, 3, len(values)))
    order = [2, 1, 0, 3][: len(values)]
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, order]))


def test_one_channel_from_a_colour_file_needs_pick(tmp_path: Path) -> None:
    _write_rgb(tmp_path / "rgb.png", (10, 20, 30))
    green = read_image(tmp_path / "rgb.png", channels=1, channel_policy="pick:1")
    assert green.shape == (2, 3, 1) and green.dtype == np.uint8
    np.testing.assert_array_equal(green, 20)
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.png", channels=1, channel_policy="pick:2"), 30)
    message = r"rgb\.png: channels=1 cannot take a 3-channel image .* use 'pick:<i>'"
    with pytest.raises(ChannelMismatchError, match=message):
        read_image(tmp_path / "rgb.png", channels=1)
    assert issubclass(ChannelMismatchError, ValueError)


def test_one_channel_file_as_is_and_repeated_for_rgb(tmp_path: Path) -> None:
    gray = np.array([[0, 50, 100], [150, 200, 250]], np.uint8)
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    np.testing.assert_array_equal(read_image(tmp_path / "gray.png", channels=1)[:, :, 0], gray)
    rgb = read_image(tmp_path / "gray.png", channels=3)
    assert rgb.shape == (2, 3, 3)
    np.testing.assert_array_equal(rgb[:, :, 2], gray)
    with pytest.raises(ChannelMismatchError, match="channels=4 cannot take a 1-channel image"):
        read_image(tmp_path / "gray.png", channels=4)


def test_four_channels_kept_in_rgba_order(tmp_path: Path) -> None:
    _write_rgb(tmp_path / "rgbx.png", (10, 20, 30, 40))
    image = read_image(tmp_path / "rgbx.png", channels=4)
    assert image.shape == (2, 3, 4) and image.flags.c_contiguous
    np.testing.assert_array_equal(image[0, 0], [10, 20, 30, 40])
    np.testing.assert_array_equal(read_image(tmp_path / "rgbx.png")[1, 2], [10, 20, 30])  # channels=3 drops the 4th
    np.testing.assert_array_equal(read_image(tmp_path / "rgbx.png", channels=1, channel_policy="pick:3"), 40)
    _write_rgb(tmp_path / "rgb.png", (10, 20, 30))
    with pytest.raises(ChannelMismatchError, match="channels=4 cannot take a 3-channel image"):
        read_image(tmp_path / "rgb.png", channels=4)
    with pytest.raises(ChannelMismatchError, match="channels=4 takes a 4-channel file as is"):
        read_image(tmp_path / "rgbx.png", channels=4, channel_policy="pick:0")


def test_window_maps_low_to_0_high_to_255_and_clips(tmp_path: Path) -> None:
    raw = np.array([[900, 1000, 1005, 1010], [2000, 1001, 1004, 1009]], np.uint16)
    cv2.imwrite(str(tmp_path / "thermal.png"), raw)
    image = read_image(tmp_path / "thermal.png", channels=1, uint16_scaling="window", intensity_window=(1000, 1010))
    # (v - 1000) * 25.5, rounded half to even: 1001 -> 25.5 -> 26, 1004 -> 102, 1009 -> 229.5 -> 230
    np.testing.assert_array_equal(image[:, :, 0], [[0, 0, 128, 255], [255, 26, 102, 230]])
    wide = scale_to_uint8(np.array([0, 20000, 24000, 28000, 65535], np.uint16), "window", (20000, 28000))
    np.testing.assert_array_equal(wide, [0, 0, 128, 255, 255])
    np.testing.assert_array_equal(scale_to_uint8(np.array([7, 9], np.uint8), "window", (0, 1)), [7, 9])  # 8 bits kept


def test_window_needs_a_valid_intensity_window() -> None:
    data = np.zeros((2, 2), np.uint16)
    with pytest.raises(ValueError, match=r"'window' needs intensity_window=\(low, high\)"):
        scale_to_uint8(data, "window")
    with pytest.raises(ValueError, match=r"intensity_window=\(500, 500\) is not valid"):
        scale_to_uint8(data, "window", (500, 500))
    with pytest.raises(ValueError, match=r"intensity_window=\(0, 70000\) is not valid"):
        scale_to_uint8(data, "window", (0, 70000))
    with pytest.raises(ValueError, match="only used with uint16_scaling 'window', got 'full'"):
        scale_to_uint8(data, "full", (0, 10))


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


def test_default_mean_std_per_channel_count() -> None:
    assert default_mean_std(3) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    mean, std = default_mean_std(1)
    assert mean == pytest.approx(((0.485 + 0.456 + 0.406) / 3,)) and mean == (0.449,)
    assert std == pytest.approx(((0.229 + 0.224 + 0.225) / 3,)) and std == (0.226,)
    assert default_mean_std(4) == ((0.485, 0.456, 0.406, 0.5), (0.229, 0.224, 0.225, 0.5))
    with pytest.raises(ValueError, match=r"channels=2 is not valid; expected one of \(1, 3, 4\)"):
        default_mean_std(2)


def test_check_mean_std_returns_the_channel_count() -> None:
    assert check_mean_std((0.5,), (0.2,)) == 1
    assert check_mean_std([0.5] * 4, [0.2] * 4) == 4
    for mean, std in (((0.5, 0.5), (0.2, 0.2)), ((0.5,) * 3, (0.2,) * 4), ((0.5,), (0.0,)), ((), ())):
        with pytest.raises(ValueError, match=f"mean={tuple(mean)}".replace("(", r"\(").replace(")", r"\)")):
            check_mean_std(mean, std)

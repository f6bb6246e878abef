"""The fast decoders give OpenCV's pixels, or step aside (None) so OpenCV decides."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from pretrainlab.data.formats._robust import BrokenSampleError
from pretrainlab.data.formats.fast_decode import decode_gray_png, decode_jpeg_bgr
from pretrainlab.data.formats.segmentation_datasets import read_image_bgr, read_label


def _smooth_bgr(height: int = 48, width: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    return cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (0, 0), 2)


def _pil_jpeg(image_bgr: np.ndarray, mode: str = "RGB", **save_args: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image_bgr[:, :, ::-1]).convert(mode).save(buffer, "JPEG", **save_args)
    return buffer.getvalue()


def _cv2(data: bytes, flags: int = cv2.IMREAD_COLOR) -> np.ndarray | None:
    return cv2.imdecode(np.frombuffer(data, np.uint8), flags)


JPEGS = {
    "baseline 4:2:0": lambda img: cv2.imencode(".jpg", img)[1].tobytes(),
    "4:4:4 quality 95": lambda img: _pil_jpeg(img, quality=95, subsampling=0),
    "progressive": lambda img: _pil_jpeg(img, progressive=True),
    "grayscale": lambda img: cv2.imencode(".jpg", img[:, :, 0])[1].tobytes(),
    "cmyk": lambda img: _pil_jpeg(img, mode="CMYK"),
}


@pytest.mark.parametrize("kind", JPEGS)
def test_jpeg_fast_path_equals_opencv(kind: str) -> None:
    data = JPEGS[kind](_smooth_bgr())
    fast = decode_jpeg_bgr(data)
    assert fast is not None
    np.testing.assert_array_equal(fast, _cv2(data))


def test_jpeg_with_exif_is_left_to_opencv(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    data = _pil_jpeg(_smooth_bgr(), exif=exif.tobytes())
    assert decode_jpeg_bgr(data) is None
    path = tmp_path / "rotated.jpg"
    path.write_bytes(data)
    expected = _cv2(data)
    assert expected.shape[:2] == (64, 48)  # OpenCV applied the orientation
    np.testing.assert_array_equal(read_image_bgr(path), expected)


def test_truncated_or_foreign_data_is_left_to_opencv(tmp_path: Path) -> None:
    data = JPEGS["baseline 4:2:0"](_smooth_bgr())
    for cut in (len(data) // 2, len(data) - 2):
        assert decode_jpeg_bgr(data[:cut]) is None
        path = tmp_path / f"cut{cut}.jpg"
        path.write_bytes(data[:cut])
        with pytest.raises(BrokenSampleError, match="cannot decode image"):
            read_image_bgr(path)
    png = cv2.imencode(".png", _smooth_bgr())[1].tobytes()
    assert decode_jpeg_bgr(png) is None


def test_gray_png_fast_path_equals_opencv_and_rejects_truncated_data(tmp_path: Path) -> None:
    label = np.random.default_rng(1).integers(0, 151, (40, 56), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(label).save(buffer, "PNG")
    data = buffer.getvalue()
    np.testing.assert_array_equal(decode_gray_png(data), label)
    np.testing.assert_array_equal(decode_gray_png(data), _cv2(data, cv2.IMREAD_UNCHANGED))
    for cut in range(60, len(data) - 12, 97):  # never a silently partial label
        assert decode_gray_png(data[:cut]) is None
        path = tmp_path / "cut.png"
        path.write_bytes(data[:cut])
        with pytest.raises(BrokenSampleError, match="cannot decode annotation"):
            read_label(path)

"""Keep-ratio random resize against mmcv 2.1.0 RandomResize / Resize reference numbers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import load_reference

from pretrainlab.data.transforms.seg_resize import (
    random_resize,
    rescale_factor,
    rescale_size,
    resize_image,
    resize_image_region,
    resize_keep_ratio,
    sample_resize_scale,
)


class ScriptedUniform:
    """Stands in for np.random.Generator: `random()` returns the saved draws in order."""

    def __init__(self, values: list[float]) -> None:
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)


@pytest.mark.reference
def test_random_resize_matches_mmcv_on_all_rows() -> None:
    ref = load_reference("resize")
    scale = tuple(int(v) for v in ref["scale"])
    ratio_range = tuple(float(v) for v in ref["ratio_range"])
    for row, ((w, h), u) in enumerate(zip(ref["in_wh"], ref["u"])):
        target = sample_resize_scale(ScriptedUniform([float(u)]), scale, ratio_range)
        assert target == tuple(ref["target_scale"][row]), row
        factor = rescale_factor(int(w), int(h), target)
        np.testing.assert_allclose(factor, ref["rescale_factor"][row], rtol=1e-12)
        new_w, new_h = rescale_size(int(w), int(h), target)
        assert (new_w, new_h) == tuple(ref["out_wh"][row]), row
        np.testing.assert_allclose([new_w / w, new_h / h], [ref["w_scale"][row], ref["h_scale"][row]], rtol=1e-12)


@pytest.mark.reference
def test_fixed_validation_resize_matches_mmcv() -> None:
    ref = load_reference("resize")
    for (w, h), out in zip(ref["fixed/in_wh"], ref["fixed/out_wh"]):
        assert rescale_size(int(w), int(h), (2048, 512)) == tuple(out), (w, h)


@pytest.mark.reference
def test_resized_arrays_have_reference_size_and_cv2_interpolation() -> None:
    ref = load_reference("resize")
    small = [i for i, (w, h) in enumerate(ref["in_wh"]) if w * h <= 200 * 200][:5]
    assert small, "expected some small rows in resize.npz"
    rng = np.random.default_rng(0)
    for row in small:
        w, h = (int(v) for v in ref["in_wh"][row])
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        label = rng.integers(0, 5, (h, w), dtype=np.uint8)
        target = tuple(int(v) for v in ref["target_scale"][row])
        out_image, out_label = resize_keep_ratio(image, label, target)
        out_w, out_h = (int(v) for v in ref["out_wh"][row])
        assert out_image.shape == (out_h, out_w, 3) and out_label.shape == (out_h, out_w)
        if (out_w, out_h) != (w, h):
            # mmcv's 'bilinear' / 'nearest' are cv2.INTER_LINEAR / cv2.INTER_NEAREST.
            np.testing.assert_array_equal(out_image, cv2.resize(image, (out_w, out_h), interpolation=cv2.INTER_LINEAR))
            np.testing.assert_array_equal(out_label, cv2.resize(label, (out_w, out_h), interpolation=cv2.INTER_NEAREST))


def test_rescale_size_hand_cases() -> None:
    # 683 wide, 512 high: long side 683 → 2048 would make the short side 1535 > 512, so the
    # short side binds: f = 1, size unchanged.
    assert rescale_size(683, 512, (2048, 512)) == (683, 512)
    # Portrait 512 × 1024 (w × h): f = min(2048/1024, 512/512) = 1.
    assert rescale_size(512, 1024, (2048, 512)) == (512, 1024)
    # 100 × 300 (w × h): f = min(2048/300, 512/100) = 5.12 → (512, 1536).
    assert rescale_size(100, 300, (2048, 512)) == (512, 1536)
    # Scale order does not matter.
    assert rescale_size(100, 300, (512, 2048)) == rescale_size(100, 300, (2048, 512))


def test_label_keeps_only_its_values_and_image_label_sizes_agree() -> None:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    label = rng.choice(np.array([2, 7, 255], dtype=np.uint8), size=(37, 53))
    out_image, out_label = random_resize(image, label, rng, (2048, 512), (0.5, 2.0))
    assert out_image.shape[:2] == out_label.shape
    assert set(np.unique(out_label)) <= {2, 7, 255}


@pytest.mark.parametrize(
    ("source_hw", "size_wh"),
    [
        ((113, 721), (722, 113)),  # height kept: a narrow view would round to its own size and be copied
        ((300, 420), (840, 600)),  # exactly 2x up
        ((300, 420), (210, 150)),  # exactly 2x down (OpenCV's area shortcut)
        ((333, 517), (1231, 793)),
        ((512, 900), (391, 222)),
        ((40, 30), (1024, 1365)),
    ],
)
def test_resize_image_region_equals_resize_then_crop_bitwise(source_hw: tuple, size_wh: tuple) -> None:
    rng = np.random.default_rng(sum(size_wh))
    image = cv2.GaussianBlur(rng.integers(0, 256, (*source_hw, 3), dtype=np.uint8), (0, 0), 1.5)
    full = resize_image(image, size_wh)
    new_w, new_h = size_wh
    for _ in range(60):
        y1, x1 = int(rng.integers(0, new_h)), int(rng.integers(0, new_w))
        y2, x2 = int(rng.integers(y1 + 1, new_h + 1)), int(rng.integers(x1 + 1, new_w + 1))
        np.testing.assert_array_equal(resize_image_region(image, size_wh, (y1, y2, x1, x2)), full[y1:y2, x1:x2])
    with pytest.raises(ValueError, match="outside the resized size"):
        resize_image_region(image, size_wh, (0, new_h + 1, 0, 1))


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="ratio_range"):
        sample_resize_scale(np.random.default_rng(0), (2048, 512), (2.0, 0.5))
    with pytest.raises(ValueError, match="image size must be positive"):
        rescale_size(0, 10, (2048, 512))
    with pytest.raises(ValueError, match="does not match image shape"):
        resize_keep_ratio(np.zeros((4, 5, 3), np.uint8), np.zeros((5, 4), np.uint8), (8, 8))

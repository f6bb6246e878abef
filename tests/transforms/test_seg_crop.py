"""cat_max_ratio random crop: exact acceptance rule, draw protocol and acceptance statistics."""

from __future__ import annotations

import numpy as np
import pytest

from pretrainlab.data.transforms.seg_crop import (
    CropBox,
    choose_crop_box,
    class_counts,
    crop,
    is_crop_acceptable,
    random_crop,
    sample_crop_box,
)


class RecordingRng:
    """Wraps a Generator and records the values returned by `integers`."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.draws: list[tuple[int, int, int]] = []

    def integers(self, low: int, high: int) -> int:
        value = int(self.rng.integers(low, high))
        self.draws.append((low, high, value))
        return value


def drawn_boxes(rng: RecordingRng, height: int, width: int, crop_hw: tuple[int, int]) -> list[CropBox]:
    draws = rng.draws
    assert len(draws) % 2 == 0
    boxes = []
    for (_, _, oh), (_, _, ow) in zip(draws[::2], draws[1::2]):
        boxes.append(CropBox(oh, min(oh + crop_hw[0], height), ow, min(ow + crop_hw[1], width)))
    return boxes


def test_sample_crop_box_draws_row_then_column_with_exclusive_bounds() -> None:
    rng = RecordingRng(0)
    box = sample_crop_box(rng, 100, 300, (64, 128))
    assert [(lo, hi) for lo, hi, _ in rng.draws] == [(0, 37), (0, 173)]
    assert box == CropBox(rng.draws[0][2], rng.draws[0][2] + 64, rng.draws[1][2], rng.draws[1][2] + 128)


def test_crop_larger_than_image_keeps_whole_dimension() -> None:
    rng = RecordingRng(1)
    box = sample_crop_box(rng, 40, 600, (512, 512))
    assert (box.y1, box.y2) == (0, 40) and box.x2 - box.x1 == 512
    assert rng.draws[0][:2] == (0, 1)


def test_acceptance_rule_hand_cases() -> None:
    def label_of(counts: dict[int, int]) -> np.ndarray:
        return np.concatenate([np.full(n, v, np.uint8) for v, n in counts.items()]).reshape(1, -1)

    assert not is_crop_acceptable(label_of({3: 100}), 0.75)  # one class
    assert not is_crop_acceptable(label_of({0: 75, 1: 25}), 0.75)  # ratio must be strictly below
    assert is_crop_acceptable(label_of({0: 74, 1: 26}), 0.75)
    # Ignored pixels are excluded from the denominator: 70 / 90 > 0.75.
    assert not is_crop_acceptable(label_of({0: 70, 1: 20, 255: 10}), 0.75)
    # A single class plus ignore counts as one class.
    assert not is_crop_acceptable(label_of({4: 10, 255: 90}), 0.75)
    assert not is_crop_acceptable(label_of({255: 100}), 0.75)
    assert is_crop_acceptable(label_of({0: 10, 1: 10, 2: 10, 255: 70}), 0.75)


def test_class_counts_on_strided_and_flipped_views() -> None:
    label = np.random.default_rng(0).integers(0, 256, (50, 70), dtype=np.uint8)
    view = label[5:40, 10:60]
    expected = np.bincount(view.ravel(), minlength=256)
    expected[255] = 0
    np.testing.assert_array_equal(class_counts(view), expected)
    np.testing.assert_array_equal(class_counts(view[:, ::-1]), expected)


def test_fallback_keeps_the_eleventh_unchecked_box() -> None:
    label = np.zeros((64, 256), np.uint8)  # one class: every crop is rejected
    rng = RecordingRng(5)
    box = choose_crop_box(label, rng, (64, 64), 0.75)
    boxes = drawn_boxes(rng, 64, 256, (64, 64))
    assert len(boxes) == 11  # the first box plus one redraw per failed check
    assert box == boxes[-1]


def test_first_acceptable_box_is_returned_and_drawing_stops() -> None:
    label = np.zeros((64, 256), np.uint8)
    label[:, 192:] = 1 + (np.indices((64, 64)).sum(0) % 2)  # right quarter: classes 1, 2
    for seed in range(20):
        rng = RecordingRng(seed)
        box = choose_crop_box(label, rng, (64, 64), 0.75)
        boxes = drawn_boxes(rng, 64, 256, (64, 64))
        checks = [is_crop_acceptable(crop(label, b), 0.75) for b in boxes]
        if any(checks[:10]):
            first = checks.index(True)
            assert box == boxes[first] and len(boxes) == first + 1
        else:
            assert len(boxes) == 11 and box == boxes[-1]


def test_acceptance_statistics_match_the_retry_rule() -> None:
    # 64 × 256 label: class 0 on columns < 192, a 1/2 checkerboard on columns ≥ 192. A 64 × 64
    # crop at column offset o (uniform on 0..192) has 192 − o class-0 columns when o > 128; it
    # passes iff that is < 48 columns, i.e. o ∈ 145..192: p = 48 / 193 per draw.
    label = np.zeros((64, 256), np.uint8)
    label[:, 192:] = 1 + (np.indices((64, 64)).sum(0) % 2)
    p = 48 / 193
    rng = np.random.default_rng(1234)
    trials = 3000
    offsets, fallbacks, acceptable = [], 0, 0
    recording = RecordingRng(0)
    recording.rng = rng
    for _ in range(trials):
        recording.draws.clear()
        box = choose_crop_box(label, recording, (64, 64), 0.75)
        num_boxes = len(recording.draws) // 2
        fallbacks += num_boxes == 11
        ok = is_crop_acceptable(crop(label, box), 0.75)
        acceptable += ok
        if num_boxes <= 10:
            assert ok  # every box returned before the fallback satisfies the rule
            offsets.append(box.x1)
    fallback_rate = (1 - p) ** 10  # ≈ 0.0575
    assert abs(fallbacks / trials - fallback_rate) < 0.02
    # The fallback box is unchecked, so it still passes with probability p.
    assert abs(acceptable / trials - (1 - (1 - p) ** 11)) < 0.015
    offsets_arr = np.array(offsets)
    assert offsets_arr.min() >= 145 and offsets_arr.max() == 192
    assert abs(offsets_arr.mean() - 168.5) < 1.0  # uniform on 145..192


def test_cat_max_ratio_one_draws_a_single_box() -> None:
    rng = RecordingRng(2)
    choose_crop_box(np.zeros((100, 100), np.uint8), rng, (50, 50), 1.0)
    assert len(rng.draws) == 2


def test_random_crop_returns_matching_views() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (80, 90, 3), dtype=np.uint8)
    label = rng.integers(0, 4, (80, 90), dtype=np.uint8)
    out_image, out_label = random_crop(image, label, rng, (32, 48), 0.75)
    assert out_image.shape == (32, 48, 3) and out_label.shape == (32, 48)
    assert np.shares_memory(out_image, image) and np.shares_memory(out_label, label)
    with pytest.raises(ValueError, match="does not match"):
        random_crop(image, label[:10], rng, (32, 48))
    with pytest.raises(ValueError, match="crop_size must be positive"):
        sample_crop_box(rng, 10, 10, (0, 5))

"""Source replay for online adaptation: uniform cycling and DAFormer's rare-class sampling."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from pretrainlab.data.source_replay import (
    ReplaySampler,
    buffer_indices,
    class_pixel_counts,
    rare_class_table,
)


def test_pixel_counts_leave_out_the_ignore_index() -> None:
    label = np.array([[0, 0, 255], [3, 3, 3]], dtype=np.uint8)
    assert class_pixel_counts(label) == {0: 2, 3: 3}


def test_rare_class_probabilities_follow_the_softmax_of_one_minus_frequency() -> None:
    counts = [{0: 900, 1: 60}, {0: 800, 2: 240}, {1: 1000}]  # totals: 0 -> 1700, 1 -> 1060, 2 -> 240
    table = rare_class_table(counts, temperature=0.5, min_pixels=50)
    assert table.classes == [2, 1, 0]  # ascending frequency, as DAFormer sorts them
    frequency = np.array([240, 1060, 1700]) / 3000
    expected = np.exp((1 - frequency) / 0.5) / np.exp((1 - frequency) / 0.5).sum()
    np.testing.assert_allclose(table.probabilities, expected, rtol=1e-12)
    assert table.images_with_class == {2: [1], 1: [0, 2], 0: [0, 1]}  # strictly more than min_pixels
    assert rare_class_table(counts, 0.5, min_pixels=900).classes == [1]  # only image 2 has > 900 of a class


def test_rare_class_replay_favours_images_with_the_rare_class() -> None:
    counts = [{0: 1000} for _ in range(9)] + [{0: 500, 1: 500}]
    sampler = ReplaySampler(list(range(100, 110)), 4, 200, mode="rare_class", counts=counts, temperature=0.01,
                            min_pixels=10, seed=3)  # fmt: skip
    drawn = collections.Counter(sampler)
    assert drawn[109] > 0.9 * len(sampler)  # class 1 is rare: P(1) ~ 1, and only image 109 holds it
    assert list(sampler) == list(sampler)


def test_uniform_replay_cycles_the_buffer_and_each_step_stands_alone() -> None:
    buffer = [5, 7, 11, 13, 17, 19]
    sampler = ReplaySampler(buffer, batch_size=4, steps=6, seed=1)
    drawn = list(sampler)
    for start in range(0, 24, 6):
        assert sorted(drawn[start : start + 6]) == buffer  # every pass is a permutation of the buffer
    assert sampler.batch(4) == drawn[16:20]  # step 4 computed alone equals step 4 of the full run
    assert drawn[:6] != drawn[6:12]  # a new order per pass
    with pytest.raises(ValueError, match="empty"):
        ReplaySampler([], 2, 1)


def test_buffer_is_a_seeded_subset() -> None:
    assert buffer_indices(10, None, 0) == list(range(10))
    subset = buffer_indices(100, 8, seed=4)
    assert len(subset) == 8 == len(set(subset)) and subset == buffer_indices(100, 8, seed=4) == sorted(subset)

"""Sliding-window / whole-image inference against MMSeg 1.2.2's window grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import load_reference

from pretrainlab.eval.slide import (
    resize_logits_to,
    slide_inference,
    slide_windows,
    whole_inference,
)


@pytest.mark.reference
def test_windows_match_mmseg_for_every_case() -> None:
    ref = load_reference("slide")
    for i in range(int(ref["n_cases"])):
        height, width = (int(v) for v in ref[f"case{i}/hw"])
        crop = tuple(int(v) for v in ref[f"case{i}/crop_size"])
        stride = tuple(int(v) for v in ref[f"case{i}/stride"])
        windows = slide_windows(height, width, crop, stride)
        np.testing.assert_array_equal(np.array(windows).reshape(-1, 4), ref[f"case{i}/windows"], err_msg=f"case {i}")
        count = np.zeros((height, width), np.int64)
        for y1, y2, x1, x2 in windows:
            count[y1:y2, x1:x2] += 1
        assert count.min() >= 1 and count.max() == int(ref[f"case{i}/count_max"])


def test_resize_logits_bilinear_half_pixel_hand_case() -> None:
    logits = torch.tensor([[[[0.0, 1.0]]]])  # (1, 1, 1, 2)
    out = resize_logits_to(logits, (1, 4))
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([0.0, 0.25, 0.75, 1.0]))
    assert resize_logits_to(logits, (1, 2)) is logits


def test_pixelwise_model_gives_the_same_logits_slide_or_whole() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 5, 1)
    image = torch.randn(2, 3, 45, 77)
    with torch.no_grad():
        whole = whole_inference(conv, image, 5)
        for per_call in (1, 4):
            slid = slide_inference(conv, image, 5, crop=(32, 32), stride=(21, 21), windows_per_call=per_call)
            torch.testing.assert_close(slid, whole, rtol=1e-5, atol=1e-6)


def test_overlaps_are_averaged_by_the_window_count() -> None:
    calls = []

    def window_index(x: torch.Tensor) -> torch.Tensor:  # each window predicts its own call index
        calls.append(tuple(x.shape))
        return torch.full((x.shape[0], 1, *x.shape[-2:]), float(len(calls) - 1))

    image = torch.zeros(1, 3, 4, 6)
    out = slide_inference(window_index, image, 1, crop=(4, 4), stride=(4, 2))
    # Windows: x ∈ [0,4) → 0, [2,6) → 1. Columns 2..3 average to 0.5.
    assert calls == [(1, 3, 4, 4), (1, 3, 4, 4)]
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([0.0, 0.0, 0.5, 0.5, 1.0, 1.0]))


def test_low_resolution_logits_are_upsampled_to_each_window() -> None:
    def stride2(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x[:, :2], 2)

    image = torch.randn(1, 3, 20, 50)
    out = slide_inference(stride2, image, 2, crop=(16, 16), stride=(8, 8))
    assert out.shape == (1, 2, 20, 50) and torch.isfinite(out).all()
    whole = whole_inference(stride2, image)
    assert whole.shape == (1, 2, 20, 50)


def test_small_image_gets_one_window_without_padding() -> None:
    assert slide_windows(20, 50, (32, 32), (21, 21)) == [(0, 20, 0, 32), (0, 20, 18, 50)]
    assert slide_windows(10, 10, (32, 32), (21, 21)) == [(0, 10, 0, 10)]


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="crop and stride must be positive"):
        slide_windows(10, 10, (0, 4), (2, 2))
    with pytest.raises(ValueError, match="expected num_classes=3"):
        slide_inference(lambda x: x[:, :2], torch.zeros(1, 3, 8, 8), 3, (4, 4), (4, 4))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        whole_inference(lambda x: x, torch.zeros(3, 8, 8))

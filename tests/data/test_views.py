"""SSL views: shapes, dtypes, exact normalisation, torchvision-equivalent colour ops, DINO's
per-view blur / solarize placement, 1- and 4-channel images, invalid arguments."""

from __future__ import annotations

import random

import cv2
import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as F

from pretrainlab.data.transforms.views import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EvalView,
    MultiCropViews,
    TwoViews,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    random_resized_crop,
    random_rotate,
    solarize,
)

NO_AUGMENT = {"color_jitter_p": 0.0, "grayscale_p": 0.0, "flip_p": 0.0}


def _image(size: int = 32) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(size, size, 3), dtype=np.uint8)


def _expected(value: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    return (value / 255.0 - np.asarray(mean)) / np.asarray(std)


def test_multicrop_shapes_and_order() -> None:
    views = MultiCropViews(num_global=2, global_size=32, num_local=4, local_size=16)(_image())
    assert [tuple(view.shape) for view in views] == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 4
    assert all(view.dtype == torch.float32 and torch.isfinite(view).all() for view in views)


def test_two_views_differ_and_are_reproducible() -> None:
    transform = TwoViews(size=24)
    random.seed(3)
    first, second = transform(_image())
    assert first.shape == second.shape == (3, 24, 24)
    assert not torch.equal(first, second)
    random.seed(3)
    again, _ = transform(_image())
    assert torch.equal(first, again)


def test_constant_image_normalises_exactly() -> None:
    colour = np.array([200, 100, 30], dtype=np.uint8)
    image = np.broadcast_to(colour, (20, 20, 3)).copy()
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    transform = MultiCropViews(
        global_blur_p=(0.0, 0.0), local_blur_p=0.0, solarize_p=0.0, mean=mean, std=std, **NO_AUGMENT
    )
    views = transform(image)
    for view in views:
        expected = torch.tensor(_expected(colour, mean, std), dtype=torch.float32)[:, None, None].expand_as(view)
        torch.testing.assert_close(view, expected, atol=2e-5, rtol=0)
    eval_view = EvalView(size=16, mean=mean, std=std)(image)
    expected = torch.tensor(_expected(colour, mean, std), dtype=torch.float32)[:, None, None].expand(3, 16, 16)
    torch.testing.assert_close(eval_view, expected)


def test_solarize_only_on_the_second_global_view() -> None:
    image = np.full((16, 16, 3), 200, np.uint8)
    views = MultiCropViews(num_local=2, solarize_p=1.0, global_blur_p=(0.0, 0.0), local_blur_p=0.0, **NO_AUGMENT)(image)
    values = [float(view[0, 0, 0]) for view in views]
    assert values[1] == pytest.approx(_expected(np.array([55, 55, 55]))[0], abs=1e-5)
    for index in (0, 2, 3):
        assert values[index] == pytest.approx(_expected(np.array([200, 200, 200]))[0], abs=1e-5)


def test_first_global_view_is_always_blurred() -> None:
    checkerboard = ((np.indices((32, 32)).sum(axis=0) % 2) * 255).astype(np.uint8)
    image = np.repeat(checkerboard[:, :, None], 3, axis=2)
    transform = MultiCropViews(global_scale=(1.0, 1.0), num_local=0, global_blur_p=(1.0, 0.0), blur_sigma=(1.0, 1.0),
                               solarize_p=0.0, **NO_AUGMENT)  # fmt: skip
    blurred, sharp = transform(image)
    assert float(blurred.std()) < 0.3 * float(sharp.std())


def test_grayscale_views_have_equal_channels() -> None:
    view, _ = TwoViews(grayscale_p=1.0, color_jitter_p=0.0, mean=(0.5,) * 3, std=(0.5,) * 3)(_image())
    torch.testing.assert_close(view[0], view[1])
    torch.testing.assert_close(view[1], view[2])


def test_colour_strength_sets_simclr_jitter() -> None:
    assert TwoViews(color_strength=0.5).photometric.jitter == pytest.approx((0.4, 0.4, 0.4, 0.1))
    assert TwoViews(color_strength=1.0).photometric.jitter == pytest.approx((0.8, 0.8, 0.8, 0.2))


@pytest.mark.parametrize(
    ("ours", "theirs", "factor"),
    [
        (adjust_brightness, F.adjust_brightness, 1.3),
        (adjust_contrast, F.adjust_contrast, 0.6),
        (adjust_contrast, F.adjust_contrast, 1.4),
        (adjust_saturation, F.adjust_saturation, 1.5),
        (adjust_hue, F.adjust_hue, 0.1),
        (adjust_hue, F.adjust_hue, -0.37),
    ],
)
def test_colour_ops_match_torchvision(ours, theirs, factor: float) -> None:
    image = np.random.default_rng(1).random((12, 12, 3)).astype(np.float32)
    expected = theirs(torch.from_numpy(image).permute(2, 0, 1), factor).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours(image, factor), expected, atol=1e-4)


def test_solarize_matches_pil_threshold() -> None:
    image = np.array([[[0, 127, 128], [200, 255, 64]]], dtype=np.uint8)
    expected = F.solarize(torch.from_numpy(image).permute(2, 0, 1), 128).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(solarize(image.astype(np.float32) / 255.0) * 255.0, expected, atol=1e-4)


def test_random_rotate_by_90_degrees_is_rot90(monkeypatch: pytest.MonkeyPatch) -> None:
    """A drawn +90 degrees (counter-clockwise) on a square image is exactly np.rot90; 0 is the identity."""
    image = _image(16)
    np.testing.assert_array_equal(random_rotate(image, max_degrees=0.0), image)
    monkeypatch.setattr(random, "uniform", lambda low, high: high)
    np.testing.assert_array_equal(random_rotate(image, max_degrees=90.0), np.rot90(image))


def test_rotation_only_when_asked() -> None:
    plain = TwoViews(**NO_AUGMENT, scale=(1.0, 1.0))
    rotating = TwoViews(**NO_AUGMENT, scale=(1.0, 1.0), rotation_p=1.0, rotation_degrees=180.0)
    image = _image()
    random.seed(3)
    first, _ = plain(image)
    random.seed(3)
    turned, _ = rotating(image)
    np.testing.assert_allclose(first.numpy(), _expected(image.astype(np.float64)).transpose(2, 0, 1), atol=1e-5)
    assert not torch.allclose(first, turned)


def test_invert_gives_the_negative() -> None:
    image = _image()
    random.seed(5)
    plain, _ = TwoViews(**NO_AUGMENT, scale=(1.0, 1.0))(image)
    random.seed(5)
    negative, _ = TwoViews(**NO_AUGMENT, scale=(1.0, 1.0), invert_p=1.0)(image)
    np.testing.assert_allclose(negative.numpy(), _expected(255.0 - image.astype(np.float64)).transpose(2, 0, 1),
                               atol=1e-5)  # fmt: skip
    assert not torch.allclose(plain, negative)


def test_random_resized_crop_full_scale_and_fallback() -> None:
    image = _image(16)
    np.testing.assert_array_equal(random_resized_crop(image, 16, (1.0, 1.0), ratio=(1.0, 1.0)), image)
    strip = np.zeros((4, 40, 3), np.uint8)
    strip[:, 14:26] = 255  # the centred fallback crop of width round(4 * 4/3) = 5 is inside the white band
    crop = random_resized_crop(strip, 8, (0.9, 1.0))  # no 0.9-area crop fits the ratio: fallback
    assert crop.shape == (8, 8, 3) and crop.min() == 255


def test_eval_view_resizes_shorter_side_and_centre_crops() -> None:
    image = np.zeros((40, 50, 3), np.uint8)
    image[4:36, 9:41] = 255  # the centre 32x32 of a 40x50 image
    view = EvalView(size=32, crop_fraction=0.8, mean=(0.0,) * 3, std=(1.0,) * 3)(image)
    torch.testing.assert_close(view, torch.ones(3, 32, 32))
    assert EvalView(size=16)(image).shape == (3, 16, 16)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: MultiCropViews(global_scale=(0.9, 0.4)), "global_scale=(0.9, 0.4)"),
        (lambda: MultiCropViews(solarize_p=1.5), "solarize_p=1.5"),
        (lambda: MultiCropViews(num_global=0), "num_global=0"),
        (lambda: MultiCropViews(hue=0.7), "hue=0.7"),
        (lambda: TwoViews(color_strength=2.0), "color_strength=2.0"),
        (lambda: TwoViews(std=(0.2, 0.0, 0.2)), "std=(0.2, 0.0, 0.2)"),
        (lambda: EvalView(crop_fraction=0.0), "crop_fraction=0.0"),
    ],
)
def test_invalid_arguments_raise(build, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        build()


def test_wrong_image_type_raises() -> None:
    with pytest.raises(ValueError, match=r"expected an RGB uint8 \(H, W, 3\) image, got float32"):
        TwoViews()(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"got uint8 \(8, 8\)"):
        MultiCropViews()(np.zeros((8, 8), np.uint8))


ALL_COLOUR_OPS = {"color_jitter_p": 1.0, "grayscale_p": 1.0, "solarize_p": 1.0, "invert_p": 1.0}


@pytest.mark.parametrize("seed", range(5))
def test_one_channel_views_follow_the_rgb_random_stream(seed: int) -> None:
    """A grey image as (H, W, 1) and as (H, W, 3) gets the same crops, flips, rotations and factors: every RGB
    channel equals the single channel, and the random stream is at the same place afterwards."""
    gray = cv2.GaussianBlur(np.random.default_rng(seed).integers(0, 256, (40, 36), dtype=np.uint8), (0, 0), 2.0)
    options = {"rotation_p": 0.5, "invert_p": 0.5, "solarize_p": 0.5}
    one = MultiCropViews(mean=(0.4,), std=(0.3,), **options)
    three = MultiCropViews(mean=(0.4,) * 3, std=(0.3,) * 3, **options)
    random.seed(seed)
    views_one, after_one = one(gray[:, :, None]), random.random()
    random.seed(seed)
    views_three, after_three = three(np.repeat(gray[:, :, None], 3, axis=2)), random.random()
    assert after_one == after_three
    assert [tuple(view.shape) for view in views_one] == [(1, 32, 32)] * 2 + [(1, 16, 16)] * 4
    for view_one, view_three in zip(views_one, views_three):
        torch.testing.assert_close(view_three, view_one.expand_as(view_three), atol=1e-4, rtol=0)


def test_one_channel_colour_ops() -> None:
    """Brightness / contrast (towards the image mean) / solarize / invert act; saturation, hue, grayscale don't."""
    image = np.array([[[0.2], [0.6]]], dtype=np.float32)  # (1, 2, 1), mean 0.4
    np.testing.assert_allclose(adjust_contrast(image, 0.5), [[[0.3], [0.5]]], atol=1e-6)
    np.testing.assert_allclose(adjust_brightness(image, 2.0), [[[0.4], [1.0]]], atol=1e-6)
    assert adjust_saturation(image, 0.1) is image and adjust_hue(image, 0.3) is image
    np.testing.assert_allclose(solarize(np.array([[[0.2], [0.8]]], np.float32)), [[[0.2], [0.2]]], atol=1e-6)
    constant = np.full((12, 12, 1), 200, np.uint8)
    for view in MultiCropViews(global_size=8, local_size=4, **ALL_COLOUR_OPS, mean=(0.0,), std=(1.0,))(constant):
        assert view.shape[0] == 1
        torch.testing.assert_close(view, torch.full_like(view, float(view[0, 0, 0])))  # still constant


def test_four_channel_views_keep_a_constant_4th_channel_through_every_colour_op() -> None:
    image = np.concatenate([_image(), np.full((32, 32, 1), 77, np.uint8)], axis=2)  # (32, 32, 4)
    mean, std = (0.485, 0.456, 0.406, 0.2), (0.229, 0.224, 0.225, 0.4)
    transform = MultiCropViews(rotation_p=1.0, global_blur_p=(1.0, 1.0), local_blur_p=1.0, mean=mean, std=std,
                               **ALL_COLOUR_OPS)  # fmt: skip
    random.seed(0)
    views = transform(image)
    assert [tuple(view.shape) for view in views] == [(4, 32, 32)] * 2 + [(4, 16, 16)] * 4
    expected = (77 / 255 - 0.2) / 0.4
    for view in views:
        torch.testing.assert_close(view[3], torch.full_like(view[3], expected), atol=1e-5, rtol=0)
        assert not torch.allclose(view[0], view[0, 0, 0])  # the colour channels were not flattened


@pytest.mark.parametrize("seed", range(5))
def test_four_channel_views_move_the_4th_channel_geometrically_only(seed: int) -> None:
    """With colour ops that only touch colour (saturation, hue, grayscale), the 4th channel of a 4-channel view is the
    1-channel view of that channel, and its RGB part the RGB view: one random stream for the three."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (40, 44, 3), dtype=np.uint8)
    extra = cv2.GaussianBlur(rng.integers(0, 256, (40, 44), dtype=np.uint8), (0, 0), 1.5)[:, :, None]
    options = {"brightness": 0.0, "contrast": 0.0, "color_jitter_p": 1.0, "grayscale_p": 0.5, "solarize_p": 0.0,
               "rotation_p": 0.5, "global_size": 16, "local_size": 8, "num_local": 2}  # fmt: skip
    outputs = []
    for image, channels in ((np.concatenate([rgb, extra], axis=2), 4), (rgb, 3), (extra, 1)):
        random.seed(seed)
        outputs.append(MultiCropViews(mean=(0.5,) * channels, std=(0.25,) * channels, **options)(image))
    for four, three, one in zip(*outputs):
        torch.testing.assert_close(four[:3], three, atol=1e-4, rtol=0)
        torch.testing.assert_close(four[3:], one, atol=1e-4, rtol=0)


def test_eval_view_takes_1_and_4_channels() -> None:
    image = np.zeros((40, 50, 4), np.uint8)
    image[4:36, 9:41] = (255, 0, 255, 51)  # the centre 32x32 of a 40x50 image
    view = EvalView(size=32, crop_fraction=0.8, mean=(0.0,) * 4, std=(1.0,) * 4)(image)
    expected = torch.tensor([1.0, 0.0, 1.0, 0.2])[:, None, None].expand(4, 32, 32)
    torch.testing.assert_close(view, expected)
    gray = EvalView(size=32, crop_fraction=0.8, mean=(0.0,), std=(1.0,))(np.ascontiguousarray(image[:, :, 3:]))
    torch.testing.assert_close(gray, torch.full((1, 32, 32), 0.2))


def test_channel_count_mismatch_raises() -> None:
    with pytest.raises(ValueError, match=r"expected a single-channel uint8 \(H, W, 1\) image, got uint8 \(8, 8, 3\)"):
        EvalView(mean=(0.5,), std=(0.2,))(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\(H, W, 4\) image, got uint8 \(8, 8, 3\) \(mean / std have 4 values\)"):
        TwoViews(mean=(0.5,) * 4, std=(0.2,) * 4)(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"mean=\(0\.5, 0\.5\), std=\(0\.2, 0\.2\) are not valid"):
        MultiCropViews(mean=(0.5, 0.5), std=(0.2, 0.2))
    with pytest.raises(ValueError, match=r"mean=\(0\.5, 0\.5, 0\.5\), std=\(0\.2,\) are not valid"):
        EvalView(mean=(0.5,) * 3, std=(0.2,))

"""Flip, normalisation, batch padding and the composed train / val segmentation pipelines."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from pretrainlab.data.transforms.photometric import (
    photometric_distortion,
    photometric_distortion_deferred,
    random_photometric_distortion,
)
from pretrainlab.data.transforms.seg_collate import (
    collate_segmentation,
    pad_batch,
    pad_image,
)
from pretrainlab.data.transforms.seg_crop import random_crop
from pretrainlab.data.transforms.seg_flip import hflip, random_flip
from pretrainlab.data.transforms.seg_normalize import normalize
from pretrainlab.data.transforms.seg_pipeline import (
    SegTrainPipeline,
    SegValPipeline,
    as_uint8_label,
)
from pretrainlab.data.transforms.seg_resize import random_resize
from pretrainlab.data.transforms.seg_sample import SegTrainSample

MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)


def test_normalize_converts_bgr_to_rgb_then_standardises() -> None:
    image = np.array([[[0, 128, 255]]], dtype=np.uint8)  # one BGR pixel: B=0, G=128, R=255
    out = normalize(image, MEAN, STD)
    assert out.shape == (3, 1, 1)
    expected = [(255 - MEAN[0]) / STD[0], (128 - MEAN[1]) / STD[1], (0 - MEAN[2]) / STD[2]]
    torch.testing.assert_close(out[:, 0, 0], torch.tensor(expected), rtol=0, atol=1e-6)
    assert out.dtype == torch.float32 and out.is_contiguous()


def test_normalize_equals_mmseg_preprocessor_formula_bitwise() -> None:
    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    chw = torch.from_numpy(image).permute(2, 0, 1)[[2, 1, 0]].float()
    expected = (chw - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    assert torch.equal(normalize(image, MEAN, STD), expected)
    assert torch.equal(normalize(image[:, ::-1], MEAN, STD), expected.flip(-1))


@pytest.mark.parametrize(
    ("params", "is_deferred"),
    [
        ((12.5, 0, 0.7, 1.1, None), True),  # saturation, then contrast last: contrast deferred
        ((-20.0, 1, 1.3, None, None), True),  # brightness + contrast first, no HSV op after
        ((5.0, 1, None, 1.2, 7), False),  # an HSV op comes last: nothing deferred
        ((None, 0, None, None, None), False),  # nothing fires
    ],
)
def test_deferred_value_map_folded_into_normalize_is_exact(params: tuple, is_deferred: bool) -> None:
    image = np.random.default_rng(4).integers(0, 256, (16, 20, 3), dtype=np.uint8)
    deferred, value_map = photometric_distortion_deferred(image, *params)
    assert (value_map is not None) == is_deferred
    assert torch.equal(normalize(deferred, MEAN, STD, value_map), normalize(photometric_distortion(image, *params)))
    with pytest.raises(ValueError, match="value_map"):
        normalize(image, MEAN, STD, np.zeros(10, np.uint8))


def test_flip_mirrors_image_and_label_together() -> None:
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    label = np.array([[0, 1, 2], [3, 4, 5]], np.uint8)
    np.testing.assert_array_equal(hflip(label), [[2, 1, 0], [5, 4, 3]])
    np.testing.assert_array_equal(hflip(image), image[:, ::-1])
    flips = 0
    rng = np.random.default_rng(0)
    for _ in range(2000):
        out_image, out_label = random_flip(image, label, rng, 0.5)
        flipped = out_label[0, 0] == 2
        flips += flipped
        assert (out_image[0, 0] == image[0, 2]).all() == flipped
    assert abs(flips / 2000 - 0.5) < 0.05
    assert random_flip(image, label, rng, 0.0)[1] is label


def test_pad_batch_pads_bottom_right_with_zero_and_255() -> None:
    images = [torch.ones(3, 2, 3), torch.full((3, 4, 1), 2.0)]
    labels = [torch.zeros(2, 3, dtype=torch.int64), torch.ones(4, 1, dtype=torch.int64)]
    batch, label_batch = pad_batch(images, labels)
    assert batch.shape == (2, 3, 4, 3) and label_batch.shape == (2, 4, 3)
    assert batch[0, :, :2, :3].eq(1).all() and batch[0, :, 2:].eq(0).all()
    assert batch[1, :, :, 1:].eq(0).all() and batch[1, :, :, :1].eq(2).all()
    assert label_batch[0, 2:].eq(255).all() and label_batch[0, :2].eq(0).all()
    assert label_batch[1, :, 1:].eq(255).all() and label_batch.dtype == torch.int64
    batch, label_batch = pad_batch(images, labels, size_divisor=14)
    assert batch.shape[-2:] == (14, 14) and label_batch.shape[-2:] == (14, 14)
    batch, label_batch = pad_batch(images, labels, size=(5, 2))
    assert batch.shape[-2:] == (5, 3)
    images_only, none = pad_batch(images, None)
    assert none is None and images_only.shape == (2, 3, 4, 3)


def _sample(image: np.ndarray, value_map: np.ndarray | None, label: np.ndarray) -> SegTrainSample:
    vm = None if value_map is None else torch.from_numpy(value_map)
    return SegTrainSample(torch.from_numpy(image), vm, torch.from_numpy(label))


@pytest.mark.parametrize(("size", "size_divisor"), [((16, 16), None), (None, None), (None, 7)])
def test_collate_equals_normalize_then_pad(size: tuple[int, int] | None, size_divisor: int | None) -> None:
    """Normalising into the batch (value map folded in) gives pad_batch(normalize(...)) bit for bit."""
    rng = np.random.default_rng(4)
    shapes = [(16, 16), (16, 16), (9, 13)] if size else [(16, 16), (11, 5)]
    samples = [
        _sample(
            rng.integers(0, 256, (*hw, 3), dtype=np.uint8),
            None if i == 0 else rng.integers(0, 256, 256).astype(np.uint8),
            rng.integers(0, 5, hw, dtype=np.uint8),
        )
        for i, hw in enumerate(shapes)
    ]
    mean, std = (10.0, 120.0, 200.0), (3.0, 60.0, 0.5)
    images, labels = collate_segmentation(samples, mean, std, size_divisor=size_divisor, size=size)
    expected_images, expected_labels = pad_batch(
        [normalize(s.augmented_image(), mean, std) for s in samples],
        [s.label for s in samples],
        size_divisor=size_divisor,
        size=size,
    )
    assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)
    assert images.dtype == torch.float32 and labels.dtype == torch.int64


def test_collate_rejects_mismatched_samples() -> None:
    with pytest.raises(ValueError, match="empty batch"):
        collate_segmentation([])
    bad = _sample(np.zeros((4, 5, 3), np.uint8), None, np.zeros((4, 6), np.uint8))
    with pytest.raises(ValueError, match=r"sample 0: image \(4, 5, 3\) does not match label \(4, 6\)"):
        collate_segmentation([bad])


def test_pad_batch_rejects_mismatches() -> None:
    with pytest.raises(ValueError, match="2 images but 1 labels"):
        pad_batch([torch.zeros(3, 2, 2)] * 2, [torch.zeros(2, 2)])
    with pytest.raises(ValueError, match="label 0 has shape"):
        pad_batch([torch.zeros(3, 2, 2)], [torch.zeros(3, 2)])
    with pytest.raises(ValueError, match="same number of channels"):
        pad_batch([torch.zeros(3, 2, 2), torch.zeros(1, 2, 2)])
    with pytest.raises(ValueError, match="size_divisor"):
        pad_image(torch.zeros(3, 2, 2), size_divisor=0)


@pytest.mark.parametrize("image_hw", [(300, 420), (113, 721), (97, 60)])
def test_train_pipeline_equals_the_composition_of_its_transforms(image_hw: tuple[int, int]) -> None:
    """The pipeline chooses the crop before resizing the image (only where cropped): same bits."""
    rng = np.random.default_rng(7)
    image = cv2.GaussianBlur(rng.integers(0, 256, (*image_hw, 3), dtype=np.uint8), (0, 0), 1.5)
    label = cv2.resize(rng.integers(0, 6, (5, 5), dtype=np.uint8), image_hw[::-1], interpolation=cv2.INTER_NEAREST)
    label[: image_hw[0] // 6] = 255
    pipeline = SegTrainPipeline(crop_size=(128, 160), scale=(512, 256))
    for seed in range(40):
        sample = pipeline(image, label, np.random.default_rng(seed))
        manual_rng = np.random.default_rng(seed)
        img, lab = random_resize(image, label, manual_rng, (512, 256), (0.5, 2.0))
        img, lab = random_crop(img, lab, manual_rng, (128, 160), 0.75)
        img, lab = random_flip(img, lab, manual_rng, 0.5)
        img = random_photometric_distortion(img, manual_rng)
        np.testing.assert_array_equal(sample.augmented_image(), img)
        np.testing.assert_array_equal(sample.label.numpy(), lab)
        assert sample.image.dtype == torch.uint8 and sample.label.dtype == torch.uint8
        assert sample.image.shape[:2] == sample.label.shape and sample.image.shape[2] == 3
        assert sample.image.shape[0] <= 128 and sample.image.shape[1] <= 160
        assert set(sample.label.unique().tolist()) <= set(range(6)) | {255}


def test_train_pipeline_accepts_int64_labels_and_leaves_inputs_alone() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    label = rng.integers(0, 3, (64, 80)).astype(np.int64)
    keep_image, keep_label = image.copy(), label.copy()
    pipeline = SegTrainPipeline(crop_size=32, scale=(80, 64), ratio_range=(1.0, 1.0))
    out_a = pipeline(image, label, np.random.default_rng(3))
    out_b = pipeline(image, label.astype(np.uint8), np.random.default_rng(3))
    np.testing.assert_array_equal(out_a.augmented_image(), out_b.augmented_image())
    assert torch.equal(out_a.label, out_b.label) and out_a.image.shape == (32, 32, 3)
    np.testing.assert_array_equal(image, keep_image)
    np.testing.assert_array_equal(label, keep_label)


def test_train_pipeline_rejects_bad_inputs() -> None:
    pipeline = SegTrainPipeline()
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="uint8 BGR image"):
        pipeline(np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8), rng)
    with pytest.raises(ValueError, match=r"\[0, 255\], got range \[-1, 0\]"):
        as_uint8_label(np.array([[-1, 0]]))
    with pytest.raises(ValueError, match="cat_max_ratio"):
        SegTrainPipeline(cat_max_ratio=0.0)
    with pytest.raises(ValueError, match="crop_size"):
        SegTrainPipeline(crop_size=(0, 5))


def test_val_pipeline_resizes_image_only_and_pads_to_divisor() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (100, 300, 3), dtype=np.uint8)  # f = min(2048/300, 512/100) = 5.12
    label = rng.integers(0, 4, (100, 300), dtype=np.uint8)
    pipeline = SegValPipeline(scale=(2048, 512), size_divisor=14)
    assert pipeline.resized_size(100, 300) == (512, 1536)
    out_image, out_label = pipeline(image, label, np.random.default_rng(0))  # rng accepted, unused
    assert out_image.shape == (3, 518, 1540)  # 512 → 518, 1536 → 1540
    assert out_image[:, 512:].eq(0).all() and out_image[:, :, 1536:].eq(0).all()
    assert out_label.shape == (100, 300) and torch.equal(out_label, torch.from_numpy(label.astype(np.int64)))
    plain, _ = SegValPipeline(scale=(2048, 512))(image, label)
    assert plain.shape == (3, 512, 1536) and torch.equal(plain, out_image[:, :512, :1536])


def test_normalize_four_channels_reorders_colour_only() -> None:
    image = np.array([[[0, 128, 255, 60]]], dtype=np.uint8)  # B=0, G=128, R=255, X=60
    mean, std = (*MEAN, 30.0), (*STD, 15.0)
    out = normalize(image, mean, std, value_map=255 - np.arange(256, dtype=np.uint8))  # inverts the colour only
    expected = [(0 - MEAN[0]) / STD[0], (127 - MEAN[1]) / STD[1], (255 - MEAN[2]) / STD[2], (60 - 30.0) / 15.0]
    torch.testing.assert_close(out[:, 0, 0], torch.tensor(expected), rtol=0, atol=1e-6)
    gray = normalize(np.array([[[51]]], np.uint8), (25.0,), (13.0,))
    assert gray.shape == (1, 1, 1) and float(gray) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="a 1-channel image needs 1 mean / std values"):
        normalize(np.zeros((2, 2, 1), np.uint8), MEAN, STD)


def _with_4th_channel(image: np.ndarray) -> np.ndarray:
    extra = cv2.GaussianBlur(np.random.default_rng(9).integers(0, 256, image.shape[:2], dtype=np.uint8), (0, 0), 2.0)
    return np.concatenate([image, extra[:, :, None]], axis=2)


def test_train_pipeline_with_4_channels_leaves_the_4th_to_geometry() -> None:
    """Same seed: the colour part is the 3-channel sample, the 4th channel is the one of the sample without
    photometric distortion (which only drops the last draws, not the geometry)."""
    rng = np.random.default_rng(2)
    image = cv2.GaussianBlur(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8), (0, 0), 1.5)
    label = rng.integers(0, 4, (90, 120), dtype=np.uint8)
    four = _with_4th_channel(image)
    pipeline = SegTrainPipeline(crop_size=(48, 64), scale=(160, 120))
    geometric = SegTrainPipeline(crop_size=(48, 64), scale=(160, 120), photometric=False)
    num_distorted = 0
    for seed in range(20):
        sample = pipeline(four, label, np.random.default_rng(seed))
        colour = pipeline(image, label, np.random.default_rng(seed))
        moved = geometric(four, label, np.random.default_rng(seed))
        augmented = sample.augmented_image()
        assert augmented.shape[2] == 4
        np.testing.assert_array_equal(augmented[:, :, :3], colour.augmented_image())
        np.testing.assert_array_equal(augmented[:, :, 3], moved.image.numpy()[:, :, 3])
        assert torch.equal(sample.label, colour.label)
        num_distorted += not np.array_equal(augmented[:, :, :3], moved.image.numpy()[:, :, :3])
    assert num_distorted >= 15  # the colour was distorted in most samples


def test_train_pipeline_with_1_channel_equals_the_grey_rgb_sample() -> None:
    rng = np.random.default_rng(3)
    gray = cv2.GaussianBlur(rng.integers(0, 256, (90, 120), dtype=np.uint8), (0, 0), 1.5)[:, :, None]
    label = rng.integers(0, 4, (90, 120), dtype=np.uint8)
    pipeline = SegTrainPipeline(crop_size=(48, 64), scale=(160, 120))
    for seed in range(20):
        one = pipeline(gray, label, np.random.default_rng(seed))
        three = pipeline(np.repeat(gray, 3, axis=2), label, np.random.default_rng(seed))
        assert one.image.shape[2] == 1
        np.testing.assert_array_equal(one.augmented_image()[:, :, 0], three.augmented_image()[:, :, 0])
        assert torch.equal(one.label, three.label)


@pytest.mark.parametrize("channels", [1, 4])
def test_collate_with_1_and_4_channels(channels: int) -> None:
    rng = np.random.default_rng(4)
    value_map = (255 - np.arange(256)).astype(np.uint8)
    samples = [
        _sample(rng.integers(0, 256, (*hw, channels), dtype=np.uint8), vm, rng.integers(0, 5, hw, dtype=np.uint8))
        for hw, vm in (((6, 7), value_map), ((4, 9), None))
    ]
    mean, std = (10.0, 120.0, 200.0, 50.0)[-channels:], (3.0, 60.0, 0.5, 25.0)[-channels:]
    images, labels = collate_segmentation(samples, mean, std, size_divisor=4)
    assert images.shape == (2, channels, 8, 12) and labels.shape == (2, 8, 12)
    expected, _ = pad_batch([normalize(s.augmented_image(), mean, std) for s in samples], size_divisor=4)
    assert torch.equal(images, expected)
    first = samples[0].image.numpy().astype(np.float32)
    if channels == 1:  # the value map applies: 255 - v
        torch.testing.assert_close(images[0, 0, :6, :7], torch.from_numpy((255 - first[:, :, 0] - 50.0) / 25.0))
    else:  # the 4th channel is not mapped
        torch.testing.assert_close(images[0, 3, :6, :7], torch.from_numpy((first[:, :, 3] - 50.0) / 25.0))
        torch.testing.assert_close(images[0, 0, :6, :7], torch.from_numpy((255 - first[:, :, 2] - 10.0) / 3.0))
    with pytest.raises(ValueError, match=rf"expected \(h, w, {channels}\)"):
        collate_segmentation([_sample(np.zeros((4, 5, 3), np.uint8), None, np.zeros((4, 5), np.uint8))], mean, std)


def test_val_pipeline_with_1_channel() -> None:
    image = np.full((50, 150, 1), 40, np.uint8)
    label = np.zeros((50, 150), np.uint8)
    out_image, _ = SegValPipeline(scale=(300, 100), size_divisor=16, mean=(20.0,), std=(10.0,))(image, label)
    assert out_image.shape == (1, 112, 304)
    assert out_image[:, :100, :300].eq(2.0).all() and out_image[:, 100:].eq(0).all()
    with pytest.raises(ValueError, match=r"mean=\(20\.0,\), std=\(10\.0, 10\.0\) are not valid"):
        SegValPipeline(mean=(20.0,), std=(10.0, 10.0))

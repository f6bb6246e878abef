"""ADE20kLayoutDataset: pairing by stem, reduce_zero_label, broken pairs skipped and counted."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from pretrainlab.data.formats.ade20k_layout import (
    ADE20kLayoutDataset,
    reduce_zero_label,
)

LABEL = np.array([[0, 1, 2], [3, 150, 255]], dtype=np.uint8)


def _pair(root: Path, split: str, stem: str, value: int, label: np.ndarray = LABEL) -> None:
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / "images" / split / f"{stem}.png"), np.full((*label.shape, 3), value, np.uint8))
    Image.fromarray(label, mode="L").save(root / "annotations" / split / f"{stem}.png")


def test_reduce_zero_label_matches_mmseg() -> None:
    np.testing.assert_array_equal(reduce_zero_label(LABEL), [[255, 0, 1], [2, 149, 255]])
    assert reduce_zero_label(LABEL).dtype == np.int64


def test_pairs_are_read_and_labels_reduced(tmp_path: Path) -> None:
    _pair(tmp_path, "training", "b", 20)
    _pair(tmp_path, "training", "a", 10)
    dataset = ADE20kLayoutDataset(tmp_path, "training")
    assert [image.name for image, _ in dataset.samples] == ["a.png", "b.png"]
    image, label = dataset[1]
    assert image.shape == (2, 3, 3) and image.dtype == np.uint8 and int(image[0, 0, 0]) == 20
    assert label.dtype == np.int64
    np.testing.assert_array_equal(label, [[255, 0, 1], [2, 149, 255]])
    _, raw = ADE20kLayoutDataset(tmp_path, "training", reduce_zero_label=False)[0]
    np.testing.assert_array_equal(raw, LABEL)


def test_palette_label_gives_indices(tmp_path: Path) -> None:
    _pair(tmp_path, "validation", "p", 5)
    palette_label = Image.fromarray(LABEL, mode="L").convert("P")
    palette_label.putpalette([value for index in range(256) for value in (index, 255 - index, 7)])
    palette_label.save(tmp_path / "annotations" / "validation" / "p.png")
    _, label = ADE20kLayoutDataset(tmp_path, "validation", reduce_zero_label=False)[0]
    np.testing.assert_array_equal(label, LABEL)


def test_transform_gets_image_and_label(tmp_path: Path) -> None:
    _pair(tmp_path, "training", "a", 10)
    dataset = ADE20kLayoutDataset(tmp_path, "training", transform=lambda image, label: (image.shape, int(label.max())))
    assert dataset[0] == ((2, 3, 3), 255)


def test_missing_annotation_raises_naming_the_file(tmp_path: Path) -> None:
    _pair(tmp_path, "training", "a", 10)
    cv2.imwrite(str(tmp_path / "images" / "training" / "lonely.jpg"), np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(ValueError, match=r"lonely\.jpg has no annotation; expected .*lonely\.png"):
        ADE20kLayoutDataset(tmp_path, "training")


def test_bad_split_and_missing_folders_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="split 'train' is not valid"):
        ADE20kLayoutDataset(tmp_path, "train")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"images/validation does not exist"):
        ADE20kLayoutDataset(tmp_path, "validation")
    (tmp_path / "images" / "validation").mkdir(parents=True)
    (tmp_path / "annotations" / "validation").mkdir(parents=True)
    with pytest.raises(ValueError, match="holds no images"):
        ADE20kLayoutDataset(tmp_path, "validation")


def test_broken_pairs_are_skipped_and_counted(tmp_path: Path) -> None:
    for stem in ("a", "b", "c", "d"):
        _pair(tmp_path, "training", stem, 10)
    (tmp_path / "images" / "training" / "a.png").write_bytes(b"")  # zero-byte image
    label_bytes = (tmp_path / "annotations" / "training" / "b.png").read_bytes()
    (tmp_path / "annotations" / "training" / "b.png").write_bytes(label_bytes[:20])  # truncated label
    _pair(tmp_path, "training", "c", 10, label=np.zeros((4, 4), np.uint8))  # size mismatch
    cv2.imwrite(str(tmp_path / "images" / "training" / "c.png"), np.zeros((2, 3, 3), np.uint8))
    dataset = ADE20kLayoutDataset(tmp_path, "training")
    items = [dataset[index] for index in range(len(dataset))]
    assert dataset.num_broken == 3
    assert all(label.shape == (2, 3) and image.shape == (2, 3, 3) for image, label in items)


def test_reads_the_synthetic_segmentation_layout(tmp_path: Path) -> None:
    from pretrainlab.data.synthetic import write_synthetic_dataset

    write_synthetic_dataset(tmp_path, workers=1, num_classes=3, num_train=0, num_val=0, num_seg_train=2, num_seg_val=3)
    dataset = ADE20kLayoutDataset(tmp_path / "segmentation", "validation")
    assert len(dataset) == 3
    for index in range(3):
        image, label = dataset[index]
        raw = np.array(Image.open(dataset.samples[index][1]))
        assert image.shape == (64, 64, 3) and label.shape == (64, 64)
        np.testing.assert_array_equal(label == 255, raw == 0)
        np.testing.assert_array_equal(label[raw > 0], raw[raw > 0].astype(np.int64) - 1)
        assert label[label != 255].max() < 6  # 3 stuff + 3 shape classes
    assert dataset.num_broken == 0

"""ADE20k / Cityscapes layout datasets on tiny generated folders."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from pretrainlab.data.formats.segmentation_datasets import (
    ADE20K_CLASSES,
    ADE20K_PALETTE,
    CITYSCAPES_CLASSES,
    CITYSCAPES_PALETTE,
    SegmentationDataset,
    SegmentationSubset,
    reduce_zero_label,
)
from pretrainlab.data.transforms.seg_pipeline import SegTrainPipeline

RED_BGR = (0, 0, 255)


def write_image(path: Path, height: int = 12, width: int = 16, colour: tuple[int, int, int] = RED_BGR) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.zeros((height, width, 3), np.uint8)
    image[:] = colour
    assert cv2.imwrite(str(path), image)


def write_label(path: Path, label: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pil = Image.fromarray(label.astype(np.uint8))  # mode "L"
    if palette:  # same indices, stored as a colour-mapped PNG
        pil = pil.convert("P")
        pil.putpalette([v for i in range(256) for v in (i, 255 - i, 0)])
    pil.save(path)


def make_ade(root: Path, num: int = 6, split: str = "training") -> None:
    for i in range(num):
        write_image(root / "images" / split / f"ADE_{i:04d}.jpg")
        label = np.zeros((12, 16), np.uint8)
        label[:, 4:] = 1
        label[:, 8:] = 150
        label[0, 0] = i % 3  # makes files distinguishable: 0 → 255 after reduction
        write_label(root / "annotations" / split / f"ADE_{i:04d}.png", label)


def make_cityscapes(root: Path) -> None:
    for city, names in {"aachen": ["aachen_000001_000019", "aachen_000000_000019"], "bonn": ["bonn_000000_000019"]}.items():
        for name in names:
            write_image(root / "leftImg8bit" / "val" / city / f"{name}_leftImg8bit.png", colour=(255, 0, 0))
            label = np.full((12, 16), 255, np.uint8)
            label[:6] = 18
            label[6:, :8] = 0
            write_label(root / "gtFine" / "val" / city / f"{name}_gtFine_labelTrainIds.png", label)


def test_class_names_and_palettes() -> None:
    assert len(ADE20K_CLASSES) == 150 and len(set(ADE20K_CLASSES)) == 150
    assert ADE20K_CLASSES[:3] == ("wall", "building", "sky") and ADE20K_CLASSES[-1] == "flag"
    assert len(CITYSCAPES_CLASSES) == 19 and CITYSCAPES_CLASSES[0] == "road" and CITYSCAPES_CLASSES[-1] == "bicycle"
    assert len(set(ADE20K_PALETTE)) == 150 and (0, 0, 0) not in ADE20K_PALETTE
    assert len(CITYSCAPES_PALETTE) == 19 and CITYSCAPES_PALETTE[0] == (128, 64, 128)


def test_ade20k_layout_loads_bgr_and_reduces_zero_label(tmp_path: Path) -> None:
    make_ade(tmp_path)
    dataset = SegmentationDataset(tmp_path, "ade20k", "train")
    assert len(dataset) == 6 and dataset.num_classes == 150 and dataset.reduce_zero_label
    image, label = dataset[0]
    assert image.shape == (12, 16, 3) and image.dtype == np.uint8
    assert image[..., 2].min() > 200 and image[..., 0].max() < 60  # red stays in channel 2 (BGR)
    assert label.dtype == np.uint8 and label[0, 0] == 255  # 0 → ignore
    assert label[5, 5] == 0 and label[5, 10] == 149  # 1 → 0, 150 → 149
    assert dataset[1][1][0, 0] == 0  # raw 1 → 0


def test_reduce_zero_label_table() -> None:
    raw = np.array([[0, 1, 2, 150, 254, 255]], np.uint8)
    np.testing.assert_array_equal(reduce_zero_label(raw), [[255, 0, 1, 149, 253, 255]])
    np.testing.assert_array_equal(reduce_zero_label(raw.astype(np.int32)), [[255, 0, 1, 149, 253, 255]])


def test_cityscapes_layout_pairs_across_cities(tmp_path: Path) -> None:
    make_cityscapes(tmp_path)
    dataset = SegmentationDataset(tmp_path, "cityscapes", "val")
    assert [p.name for p, _ in dataset.pairs] == [
        "aachen_000000_000019_leftImg8bit.png",
        "aachen_000001_000019_leftImg8bit.png",
        "bonn_000000_000019_leftImg8bit.png",
    ]
    assert dataset.pairs[2][1].name == "bonn_000000_000019_gtFine_labelTrainIds.png"
    image, label = dataset[2]
    assert image[0, 0].tolist() == [255, 0, 0]  # lossless PNG, BGR order kept
    assert set(np.unique(label).tolist()) == {0, 18, 255} and not dataset.reduce_zero_label


def test_palette_png_labels_are_read_as_indices(tmp_path: Path) -> None:
    make_cityscapes(tmp_path)
    label = np.zeros((12, 16), np.uint8)
    label[:, 8:] = 7
    path = tmp_path / "gtFine" / "val" / "bonn" / "bonn_000000_000019_gtFine_labelTrainIds.png"
    write_label(path, label, palette=True)
    assert Image.open(path).mode == "P"
    assert set(np.unique(SegmentationDataset(tmp_path, "cityscapes", "val")[2][1]).tolist()) == {0, 7}


def test_out_of_range_label_raises_naming_file_and_values(tmp_path: Path) -> None:
    make_ade(tmp_path)
    bad = np.zeros((12, 16), np.uint8)
    bad[:, :3] = 151  # 150 after reduce_zero_label: one past the last ADE class
    bad[:, 3:5] = 200
    write_label(tmp_path / "annotations" / "training" / "ADE_0003.png", bad)
    dataset = SegmentationDataset(tmp_path, "ade20k", "train")
    with pytest.raises(ValueError, match=r"ADE_0003\.png: label values \[150, 199\]"):
        dataset[3]
    assert dataset.num_broken == 0  # a configuration error, not a skipped sample


def test_broken_and_missing_files_are_skipped_and_counted(tmp_path: Path) -> None:
    make_ade(tmp_path)
    (tmp_path / "images" / "training" / "ADE_0002.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "annotations" / "training" / "ADE_0004.png").unlink()
    dataset = SegmentationDataset(tmp_path, "ade20k", "train")
    image, label = dataset[2]
    assert image.shape == (12, 16, 3) and label.shape == (12, 16)
    dataset[4]
    assert dataset.broken_indices >= {2, 4} and dataset.num_broken == len(dataset.broken_indices)
    assert dataset.describe(2).endswith("ADE_0002.jpg")


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_broken_files_met_by_dataloader_workers_are_counted_here(tmp_path: Path, context: str) -> None:
    make_ade(tmp_path, num=8)
    for index in (1, 5, 6):
        (tmp_path / "images" / "training" / f"ADE_{index:04d}.jpg").write_bytes(b"not a jpeg")
    dataset = SegmentationDataset(tmp_path, "ade20k", "train")
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2, multiprocessing_context=context,
                                         collate_fn=len)  # fmt: skip
    assert sum(loader) == 8  # every broken sample replaced by a readable one
    assert dataset.broken_indices >= {1, 5, 6} and dataset.num_broken == len(dataset.broken_indices)


def test_subsets_are_deterministic(tmp_path: Path) -> None:
    make_ade(tmp_path, num=10)
    names = lambda d: [p.stem for p, _ in d.pairs]
    every = SegmentationDataset(tmp_path, "ade20k", "train", subset=SegmentationSubset(every=4))
    assert names(every) == ["ADE_0000", "ADE_0004", "ADE_0008"]
    quarter = SegmentationDataset(tmp_path, "ade20k", "train", subset=SegmentationSubset(fraction=0.25))
    assert names(quarter) == ["ADE_0000", "ADE_0005"]  # round(0.25 · 10) = 2 samples, evenly spaced
    again = SegmentationDataset(tmp_path, "ade20k", "train", subset=SegmentationSubset(fraction=0.25))
    assert names(again) == names(quarter)
    assert SegmentationSubset(fraction=0.3).indices(10) == [0, 3, 6]
    assert SegmentationSubset(fraction=0.01).indices(10) == [0]
    with pytest.raises(ValueError, match="exactly one of fraction / every"):
        SegmentationSubset(fraction=0.5, every=2)
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
        SegmentationSubset(fraction=1.5)


def test_transform_gets_a_seeded_generator(tmp_path: Path) -> None:
    make_ade(tmp_path)
    pipeline = SegTrainPipeline(crop_size=8, scale=(16, 12), ratio_range=(0.5, 2.0))
    dataset = SegmentationDataset(tmp_path, "ade20k", "train", transform=pipeline)
    torch.manual_seed(11)
    first = [dataset[i] for i in range(4)]
    sample = first[0]
    assert sample.image.dtype == torch.uint8 and sample.image.shape[2] == 3 and sample.label.dtype == torch.uint8
    assert sample.image.shape[:2] == sample.label.shape and max(sample.label.shape) <= 8
    torch.manual_seed(11)
    second = SegmentationDataset(tmp_path, "ade20k", "train", transform=pipeline)
    again = [second[i] for i in range(4)]
    assert all(np.array_equal(a.augmented_image(), b.augmented_image()) for a, b in zip(first, again))
    assert all(torch.equal(a.label, b.label) for a, b in zip(first, again))


def test_bad_configuration_raises(tmp_path: Path) -> None:
    make_ade(tmp_path)
    with pytest.raises(ValueError, match="unknown segmentation layout 'ade'; known: ade20k, cityscapes"):
        SegmentationDataset(tmp_path, "ade")
    with pytest.raises(ValueError, match="unknown split 'test'"):
        SegmentationDataset(tmp_path, "ade20k", "test")
    with pytest.raises(ValueError, match="validation"):
        SegmentationDataset(tmp_path, "ade20k", "val")


def test_truncated_files_are_skipped_and_counted(tmp_path: Path) -> None:
    make_ade(tmp_path)
    path = tmp_path / "annotations" / "training" / "ADE_0001.png"
    path.write_bytes(path.read_bytes()[:60])
    image_path = tmp_path / "images" / "training" / "ADE_0005.jpg"
    noisy = np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    assert cv2.imwrite(str(image_path), noisy)
    image_path.write_bytes(image_path.read_bytes()[:-30])  # a JPEG cut short: cv2.imread would still decode it
    dataset = SegmentationDataset(tmp_path, "ade20k", "train")
    dataset[1]
    dataset[5]
    assert dataset.broken_indices >= {1, 5}


def test_16_bit_label_values_are_checked_before_the_uint8_cast(tmp_path: Path) -> None:
    make_cityscapes(tmp_path)
    label = np.zeros((12, 16), np.uint16)
    label[0, :3] = 300  # would wrap to 44 in uint8
    path = tmp_path / "gtFine" / "val" / "bonn" / "bonn_000000_000019_gtFine_labelTrainIds.png"
    assert cv2.imwrite(str(path), label)
    with pytest.raises(ValueError, match=r"bonn_000000_000019_gtFine_labelTrainIds\.png: label values \[300\]"):
        SegmentationDataset(tmp_path, "cityscapes", "val")[2]


def _cityscapes_images(root: Path) -> list[Path]:
    return sorted((root / "leftImg8bit" / "val").glob("*/*_leftImg8bit.png"))


def test_four_channel_images_come_in_bgrx_order(tmp_path: Path) -> None:
    make_cityscapes(tmp_path)
    for path in _cityscapes_images(tmp_path):
        assert cv2.imwrite(str(path), np.full((12, 16, 4), (10, 20, 30, 40), np.uint8))  # B, G, R, X
    image, label = SegmentationDataset(tmp_path, "cityscapes", "val", channels=4)[0]
    assert image.shape == (12, 16, 4) and label.shape == (12, 16)
    np.testing.assert_array_equal(image[3, 5], [10, 20, 30, 40])
    np.testing.assert_array_equal(SegmentationDataset(tmp_path, "cityscapes", "val")[0][0][3, 5], [10, 20, 30])


def test_one_channel_images_by_pick_or_window(tmp_path: Path) -> None:
    make_cityscapes(tmp_path)  # BGR (255, 0, 0): R = 0, B = 255
    picked = SegmentationDataset(tmp_path, "cityscapes", "val", channels=1, channel_policy="pick:2")[1][0]
    assert picked.shape == (12, 16, 1) and (picked == 255).all()
    with pytest.raises(ValueError, match="channels=1 cannot take a 3-channel image"):  # raised, not skipped
        SegmentationDataset(tmp_path, "cityscapes", "val", channels=1)[0]
    for path in _cityscapes_images(tmp_path):
        assert cv2.imwrite(str(path), np.full((12, 16), 30500, np.uint16))
    thermal = SegmentationDataset(
        tmp_path, "cityscapes", "val", channels=1, uint16_scaling="window", intensity_window=(30000, 31000)
    )
    np.testing.assert_array_equal(thermal[0][0], np.full((12, 16, 1), 128))  # 500 / 1000 * 255 = 127.5 -> 128

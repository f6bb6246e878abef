"""ImageFolderDataset: class indexing, transform, broken files skipped and counted, in-memory mode."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from pretrainlab.data.formats.imagefolder import ImageFolderDataset

# Each class has its own grey level so a returned image tells which file it came from.
LEVELS = {"ant": 40, "bee": 120, "cat": 200}


def _write(path: Path, value: int, size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((size, size, 3), value, np.uint8))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for name, level in LEVELS.items():
        for index in range(4):
            _write(tmp_path / name / f"{index}.png", level)
    _write(tmp_path / "bee" / "nested" / "deep.JPG", LEVELS["bee"])
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    (tmp_path / ".cache").mkdir()
    return tmp_path


def _break(folder: Path) -> None:
    """A zero-byte, a truncated and a garbage file."""
    (folder / "ant" / "empty.png").write_bytes(b"")
    data = (folder / "cat" / "0.png").read_bytes()
    (folder / "cat" / "truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "bee" / "garbage.jpg").write_bytes(b"\xff\xd8 garbage bytes" * 20)


def test_classes_targets_and_samples(folder: Path) -> None:
    dataset = ImageFolderDataset(folder)
    assert dataset.classes == ["ant", "bee", "cat"]
    assert len(dataset) == 13
    assert dataset.targets == [0] * 4 + [1] * 5 + [2] * 4
    assert dataset.samples[4] == (folder / "bee" / "0.png", 1)
    assert dataset.samples[8] == (folder / "bee" / "nested" / "deep.JPG", 1)
    image, label = dataset[5]
    assert image.shape == (8, 8, 3) and image.dtype == np.uint8 and label == 1
    assert abs(int(image[0, 0, 0]) - LEVELS["bee"]) <= 2


def test_transform_receives_rgb_uint8_array(folder: Path) -> None:
    seen = []

    def transform(image: np.ndarray) -> float:
        seen.append((image.shape, image.dtype))
        return float(image.mean())

    value, label = ImageFolderDataset(folder, transform=transform)[12]
    assert seen == [((8, 8, 3), np.uint8)] and label == 2 and value == pytest.approx(LEVELS["cat"])


def test_transform_errors_are_raised_not_skipped(folder: Path) -> None:
    def transform(image: np.ndarray) -> np.ndarray:
        raise ValueError("bug in the transform")

    with pytest.raises(ValueError, match="bug in the transform"):
        ImageFolderDataset(folder, transform=transform)[0]


def test_broken_files_are_skipped_and_counted(folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    _break(folder)
    dataset = ImageFolderDataset(folder)
    assert len(dataset) == 16
    with caplog.at_level(logging.WARNING):
        items = [dataset[index] for index in range(len(dataset))]
    assert dataset.num_broken == 3
    for image, label in items:  # a replacement sample keeps its own label
        assert abs(int(image[0, 0, 0]) - LEVELS[dataset.classes[label]]) <= 2
    assert "empty.png" in caplog.text and "truncated.png" in caplog.text and "garbage.jpg" in caplog.text


def test_in_memory_drops_broken_files(folder: Path) -> None:
    _break(folder)
    dataset = ImageFolderDataset(folder, in_memory=True)
    assert len(dataset) == 13 and dataset.num_broken == 3
    assert isinstance(dataset.images, np.ndarray) and dataset.images.shape == (13, 8, 8, 3)
    assert dataset.targets == [0] * 4 + [1] * 5 + [2] * 4
    image, label = dataset[12]
    assert label == 2 and abs(int(image[0, 0, 0]) - LEVELS["cat"]) <= 2
    with pytest.raises(ValueError, match="read-only"):
        image[0, 0, 0] = 0
    assert dataset.num_broken == 3


def test_in_memory_samples_feed_the_ssl_views(folder: Path) -> None:
    from pretrainlab.data.transforms.views import MultiCropViews

    views, label = ImageFolderDataset(folder, in_memory=True, transform=MultiCropViews(global_size=8, local_size=4))[0]
    assert label == 0 and [tuple(view.shape) for view in views] == [(3, 8, 8)] * 2 + [(3, 4, 4)] * 4


def test_in_memory_keeps_a_list_for_mixed_sizes(tmp_path: Path) -> None:
    _write(tmp_path / "a" / "small.png", 10, size=4)
    _write(tmp_path / "a" / "large.png", 10, size=6)
    dataset = ImageFolderDataset(tmp_path, in_memory=True)
    assert [image.shape for image in dataset.images] == [(6, 6, 3), (4, 4, 3)]


def test_empty_class_keeps_its_index(folder: Path) -> None:
    (folder / "bat").mkdir()
    dataset = ImageFolderDataset(folder)
    assert dataset.classes == ["ant", "bat", "bee", "cat"]
    assert sorted(set(dataset.targets)) == [0, 2, 3]


def test_bad_roots_raise_with_the_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"{tmp_path / 'missing'} does not exist"):
        ImageFolderDataset(tmp_path / "missing")
    with pytest.raises(ValueError, match="has no class sub-folders"):
        ImageFolderDataset(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match=r"has class folders \['a'\] but no images"):
        ImageFolderDataset(tmp_path)
    with pytest.raises(ValueError, match="channel policy 'rgb'"):
        ImageFolderDataset(tmp_path, channel_policy="rgb")
    with pytest.raises(ValueError, match="uint16_scaling 'log'"):
        ImageFolderDataset(tmp_path, uint16_scaling="log")  # type: ignore[arg-type]


def _write_thermal(folder: Path) -> dict[str, np.ndarray]:
    """Two 16-bit single-channel files per class, raw values inside a 20000..28000 band."""
    raws = {}
    for index, name in enumerate(("cold", "warm")):
        (folder / name).mkdir(parents=True)
        for copy in range(2):
            raw = np.full((4, 6), 20000 + 2000 * (2 * index + copy), np.uint16)  # 20000, 22000, 24000, 26000
            raw[0, 0] = 30000  # a hot pixel, clipped by the window
            cv2.imwrite(str(folder / name / f"{copy}.png"), raw)
            raws[f"{name}/{copy}"] = raw
    return raws


@pytest.mark.parametrize("in_memory", [False, True])
def test_thermal_files_read_with_a_window_as_one_channel(tmp_path: Path, in_memory: bool) -> None:
    _write_thermal(tmp_path)
    dataset = ImageFolderDataset(
        tmp_path, channels=1, uint16_scaling="window", intensity_window=(20000, 28000), in_memory=in_memory
    )
    values = []
    for index in range(len(dataset)):
        image, _ = dataset[index]
        assert image.shape == (4, 6, 1) and image.dtype == np.uint8
        assert image[0, 0, 0] == 255
        values.append(int(image[1, 1, 0]))
    assert values == [0, 64, 128, 191]  # 2000 / 8000 * 255 = 63.75 -> 64, 191.25 -> 191
    if in_memory:
        assert dataset.images.shape == (4, 4, 6, 1)
    full = ImageFolderDataset(tmp_path, channels=1)[3][0]
    assert int(full[1, 1, 0]) == 101  # round(26000 / 257): the band is squeezed without the window


@pytest.mark.parametrize("in_memory", [False, True])
def test_channel_mismatch_is_raised_not_skipped(folder: Path, in_memory: bool) -> None:
    with pytest.raises(ValueError, match=r"0\.png: channels=1 cannot take a 3-channel image .* 'pick:<i>'"):
        ImageFolderDataset(folder, channels=1, in_memory=in_memory)[0]
    image, _ = ImageFolderDataset(folder, channels=1, channel_policy="pick:0", in_memory=in_memory)[0]
    assert image.shape == (8, 8, 1) and abs(int(image[0, 0, 0]) - LEVELS["ant"]) <= 2


def test_invalid_channel_options_raise(folder: Path) -> None:
    with pytest.raises(ValueError, match="channels=2 is not valid"):
        ImageFolderDataset(folder, channels=2)
    with pytest.raises(ValueError, match="'window' needs intensity_window"):
        ImageFolderDataset(folder, uint16_scaling="window")


def test_all_broken_in_memory_raises(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"")
    with pytest.raises(ValueError, match="all 1 images are broken"):
        ImageFolderDataset(tmp_path, in_memory=True)


def test_reads_the_synthetic_classification_layout(tmp_path: Path) -> None:
    from pretrainlab.data.synthetic import write_synthetic_dataset

    summary = write_synthetic_dataset(
        tmp_path, workers=1, num_classes=4, num_train=16, num_val=8, num_seg_train=0, num_seg_val=0
    )
    dataset = ImageFolderDataset(tmp_path / "classification" / "val", in_memory=True)
    assert dataset.classes == sorted(summary.classification_classes)
    assert dataset.images.shape == (8, 32, 32, 3) and dataset.num_broken == 0
    assert [dataset.classes[t] for t in dataset.targets] == sorted(summary.classification_classes * 2)

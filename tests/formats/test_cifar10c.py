"""CIFAR-10-C layout: our corrupted copies written and read back, and every malformed folder named clearly."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from pretrainlab.data.formats.cifar10c import list_corruptions, read_cifar10c, write_cifar10c
from pretrainlab.data.transforms.corruptions import corrupt


def clean_set(num: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(num, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, size=num)


def corrupted_blocks(images: np.ndarray, name: str) -> list[np.ndarray]:
    """Severities 1..5 of every image, one RNG per (severity, image)."""
    return [np.stack([corrupt(image, name, severity, np.random.default_rng([severity, index]))
                      for index, image in enumerate(images)]) for severity in range(1, 6)]  # fmt: skip


def test_round_trip_of_generated_copies(tmp_path: Path) -> None:
    images, labels = clean_set()
    blocks = {name: corrupted_blocks(images, name) for name in ("fog", "gaussian_noise")}
    for name, severities in blocks.items():
        assert write_cifar10c(tmp_path, name, severities, labels) == tmp_path / f"{name}.npy"
    assert list_corruptions(tmp_path) == ["fog", "gaussian_noise"]
    assert np.load(tmp_path / "fog.npy").shape == (30, 32, 32, 3)  # 5 blocks of 6, severity-major
    np.testing.assert_array_equal(np.load(tmp_path / "labels.npy"), np.tile(labels, 5))  # the released layout
    for name, severities in blocks.items():
        for severity in range(1, 6):
            read_images, read_labels = read_cifar10c(tmp_path, name, severity)
            np.testing.assert_array_equal(read_images, severities[severity - 1])
            np.testing.assert_array_equal(read_labels, labels)
            assert read_labels.dtype == np.int64
    assert not np.array_equal(blocks["fog"][0], blocks["fog"][4])


def test_labels_given_once_per_image_are_read_too(tmp_path: Path) -> None:
    images, labels = clean_set()
    np.save(tmp_path / "contrast.npy", np.concatenate([images] * 5))
    np.save(tmp_path / "labels.npy", labels)  # (N,) instead of (5 N,)
    np.testing.assert_array_equal(read_cifar10c(tmp_path, "contrast", 4)[1], labels)


def write_raw(root: Path, images: np.ndarray, labels: np.ndarray, name: str = "fog") -> None:
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / f"{name}.npy", images)
    np.save(root / "labels.npy", labels)


def test_missing_labels_file_is_named(tmp_path: Path) -> None:
    np.save(tmp_path / "fog.npy", np.zeros((10, 32, 32, 3), dtype=np.uint8))
    message = re.escape(f"labels.npy not found; expected {tmp_path / 'labels.npy'}")
    for call in (lambda: list_corruptions(tmp_path), lambda: read_cifar10c(tmp_path, "fog", 1)):
        with pytest.raises(FileNotFoundError, match=message):
            call()


def test_missing_corruption_lists_the_available_ones(tmp_path: Path) -> None:
    write_raw(tmp_path, np.zeros((10, 32, 32, 3), dtype=np.uint8), np.zeros(10, dtype=np.uint8))
    with pytest.raises(FileNotFoundError, match="frost.npy not found; available corruptions: fog"):
        read_cifar10c(tmp_path, "frost", 1)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.zeros((10, 32, 32, 3), dtype=np.float32), r"expected uint8 images \(5 N, H, W, C\).*got float32"),
        (np.zeros((10, 32, 32), dtype=np.uint8), r"got uint8 \(10, 32, 32\)"),
        (np.zeros((10, 32, 32, 4), dtype=np.uint8), r"C = 1 or 3, got uint8 \(10, 32, 32, 4\)"),
        (np.zeros((12, 32, 32, 3), dtype=np.uint8), "12 images is not a positive multiple of 5"),
        (np.zeros((0, 32, 32, 3), dtype=np.uint8), "0 images is not a positive multiple of 5"),
    ],
)
def test_malformed_images_file_is_named(tmp_path: Path, images: np.ndarray, message: str) -> None:
    write_raw(tmp_path, images, np.zeros(len(images), dtype=np.uint8))
    with pytest.raises(ValueError, match=message) as error:
        read_cifar10c(tmp_path, "fog", 1)
    assert str(tmp_path / "fog.npy") in str(error.value)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.zeros(7, dtype=np.uint8), "7 labels do not fit .*fog.npy with 10 images; expected 10 .* or 2"),
        (np.zeros(10, dtype=np.float32), "expected a 1-D integer array of labels, got float32"),
        (np.zeros((10, 1), dtype=np.uint8), r"got uint8 \(10, 1\)"),
    ],
)
def test_malformed_labels_are_named(tmp_path: Path, labels: np.ndarray, message: str) -> None:
    write_raw(tmp_path, np.zeros((10, 32, 32, 3), dtype=np.uint8), labels)
    with pytest.raises(ValueError, match=message) as error:
        read_cifar10c(tmp_path, "fog", 1)
    assert str(tmp_path / "labels.npy") in str(error.value)


def test_severity_outside_1_to_5_is_refused(tmp_path: Path) -> None:
    write_raw(tmp_path, np.zeros((10, 32, 32, 3), dtype=np.uint8), np.zeros(10, dtype=np.uint8))
    for severity in (0, 6):
        with pytest.raises(ValueError, match=f"severity {severity} of .*fog.npy is not valid; expected .* 1..5"):
            read_cifar10c(tmp_path, "fog", severity)


def test_writer_refuses_other_labels_in_the_same_folder_and_bad_blocks(tmp_path: Path) -> None:
    images, labels = clean_set()
    write_cifar10c(tmp_path, "fog", [images] * 5, labels)
    with pytest.raises(ValueError, match="labels.npy holds other labels than those given for contrast"):
        write_cifar10c(tmp_path, "contrast", [images] * 5, (labels + 1) % 10)
    with pytest.raises(ValueError, match="expected 5 severity blocks of images, got 4"):
        write_cifar10c(tmp_path, "contrast", [images] * 4, labels)
    with pytest.raises(ValueError, match="expected 6 integer labels"):
        write_cifar10c(tmp_path, "contrast", [images] * 5, labels[:5])
    with pytest.raises(ValueError, match="labels must lie in 0..255"):
        write_cifar10c(tmp_path / "other", "contrast", [images] * 5, labels + 300)

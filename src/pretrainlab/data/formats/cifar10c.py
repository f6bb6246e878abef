"""The CIFAR-10-C layout (Hendrycks & Dietterich 2019): one `.npy` file per corruption and `labels.npy`.

    <root>/<corruption>.npy   uint8 (5 N, H, W, C): severities 1..5 stacked in blocks of N images
    <root>/labels.npy         integer (5 N,) (the released files: the N labels repeated per severity)
                              or (N,)

The released set has N = 10000 test images of 32 x 32 x 3; `write_cifar10c` writes the same
layout (labels repeated, uint8), e.g. our own corrupted copies (`data/transforms/corruptions.py`).
Every check names the file and what was expected.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

LABELS_FILE = "labels.npy"
NUM_SEVERITIES = 5


def _labels_path(root: Path) -> Path:
    path = Path(root) / LABELS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR-10-C folder {root}: {LABELS_FILE} not found; expected {path} next to the "
                                f"<corruption>.npy files")  # fmt: skip
    return path


def list_corruptions(root: Path | str) -> list[str]:
    """Sorted corruption names (the `.npy` files of `root` other than labels.npy)."""
    root = Path(root)
    _labels_path(root)
    return sorted(path.stem for path in root.glob("*.npy") if path.name != LABELS_FILE)


def _read_labels(path: Path, num_images: int, images_path: Path) -> np.ndarray:
    """(N,) int64 labels of one severity block, from labels of length 5 N (released layout) or N."""
    labels = np.load(path, mmap_mode="r")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: expected a 1-D integer array of labels, got {labels.dtype} {labels.shape}")
    block = num_images // NUM_SEVERITIES
    if len(labels) not in (num_images, block):
        raise ValueError(f"{path}: {len(labels)} labels do not fit {images_path} with {num_images} images; expected "
                         f"{num_images} (one per image) or {block} (one per image of a severity)")  # fmt: skip
    return np.asarray(labels[:block], dtype=np.int64)


def read_cifar10c(root: Path | str, corruption: str, severity: int) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of `corruption` at `severity` 1..5.

    Returns:
        images uint8 (N, H, W, C) and labels int64 (N,).
    """
    root = Path(root)
    labels_path = _labels_path(root)
    path = root / f"{corruption}.npy"
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR-10-C folder {root}: {path.name} not found; available corruptions: "
                                f"{', '.join(list_corruptions(root)) or 'none'}")  # fmt: skip
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 1 <= severity <= NUM_SEVERITIES:
        raise ValueError(f"severity {severity!r} of {path} is not valid; expected an integer in 1..{NUM_SEVERITIES}")
    images = np.load(path, mmap_mode="r")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] not in (1, 3):
        raise ValueError(f"{path}: expected uint8 images (5 N, H, W, C) with C = 1 or 3, got "
                         f"{images.dtype} {images.shape}")  # fmt: skip
    if len(images) == 0 or len(images) % NUM_SEVERITIES:
        raise ValueError(f"{path}: {len(images)} images is not a positive multiple of {NUM_SEVERITIES}; expected "
                         f"severities 1..{NUM_SEVERITIES} stacked in blocks of N")  # fmt: skip
    labels = _read_labels(labels_path, len(images), path)
    block = len(images) // NUM_SEVERITIES
    return np.array(images[(severity - 1) * block : severity * block]), labels


def write_cifar10c(root: Path | str, corruption: str, images: Sequence[np.ndarray], labels: np.ndarray) -> Path:
    """Write `<root>/<corruption>.npy` from the 5 severity blocks `images` (each uint8 (N, H, W, C)) and
    `labels.npy` (uint8 (5 N,), the labels repeated per severity); an existing labels.npy must hold the
    same labels. Returns the path of the images file."""
    root = Path(root)
    if len(images) != NUM_SEVERITIES:
        raise ValueError(f"{corruption}: expected {NUM_SEVERITIES} severity blocks of images, got {len(images)}")
    shapes = {block.shape for block in images}
    if len(shapes) != 1 or any(block.dtype != np.uint8 or block.ndim != 4 for block in images):
        raise ValueError(f"{corruption}: expected 5 uint8 blocks (N, H, W, C) of one shape, got "
                         f"{[f'{block.dtype} {block.shape}' for block in images]}")  # fmt: skip
    labels = np.asarray(labels)
    num_images = images[0].shape[0]
    if labels.shape != (num_images,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{corruption}: expected {num_images} integer labels, got {labels.dtype} {labels.shape}")
    if num_images and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"{corruption}: labels must lie in 0..255 (stored as uint8), got "
                         f"{labels.min()}..{labels.max()}")  # fmt: skip
    repeated = np.tile(labels.astype(np.uint8), NUM_SEVERITIES)  # (5 N,)
    root.mkdir(parents=True, exist_ok=True)
    labels_path = root / LABELS_FILE
    if labels_path.is_file() and not np.array_equal(np.load(labels_path), repeated):
        raise ValueError(f"{labels_path} holds other labels than those given for {corruption}; write each image "
                         f"set into its own folder")  # fmt: skip
    np.save(labels_path, repeated)
    path = root / f"{corruption}.npy"
    np.save(path, np.concatenate(images))
    log.info("wrote %s: %d images per severity", path, num_images)
    return path

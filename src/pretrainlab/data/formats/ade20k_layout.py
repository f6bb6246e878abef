"""Minimal reader for the ADE20k on-disk layout (as used by MMSegmentation):

    root/images/{training,validation}/<stem>.{jpg,png,...}
    root/annotations/{training,validation}/<stem>.png     uint8 label values

With `reduce_zero_label` (ADE20k's convention) value 0 ("other") becomes the ignore
index 255 and every other value v becomes v - 1; 255 stays 255 — the same mapping as
MMSegmentation's `LoadAnnotations(reduce_zero_label=True)`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from pretrainlab.data.formats._robust import BrokenSampleError, SkippingDataset
from pretrainlab.data.images import is_image_file, read_image

log = logging.getLogger(__name__)

IGNORE_INDEX = 255
Split = Literal["training", "validation"]


def reduce_zero_label(label: np.ndarray) -> np.ndarray:
    """(H, W) integer label -> int64 with 0 -> 255, v -> v - 1 for v in 1..254, 255 -> 255."""
    reduced = label.astype(np.int64) - 1
    reduced[(label == 0) | (label == IGNORE_INDEX)] = IGNORE_INDEX
    return reduced


def read_label(path: Path) -> np.ndarray:
    """A label PNG as (H, W) uint8 values (palette PNGs give their indices, not colours)."""
    try:
        with Image.open(path) as label:
            if label.mode not in ("L", "P"):
                raise BrokenSampleError(f"label {path} has PIL mode {label.mode!r}; expected a one-channel L or P PNG")
            return np.array(label, dtype=np.uint8)
    except OSError as error:
        raise BrokenSampleError(f"cannot read label {path}: {error}") from error


class ADE20kLayoutDataset(SkippingDataset):
    """Segmentation pairs from an ADE20k-layout folder, matched by file stem.

    Each sample is `(image, label)`: image RGB uint8 (H, W, 3), label int64 (H, W) with 255
    ignored (after `reduce_zero_label` when set), or `transform(image, label)` when given.
    Broken image or label files, and pairs whose sizes differ, are skipped and counted.

    Raises:
        ValueError: `split` is unknown, the folders are missing or empty, or an image has no
            annotation (the message names the file).
    """

    def __init__(
        self,
        root: Path | str,
        split: Split = "training",
        *,
        reduce_zero_label: bool = True,
        transform: Callable[[np.ndarray, np.ndarray], Any] | None = None,
    ) -> None:
        super().__init__()
        if split not in ("training", "validation"):
            raise ValueError(f"split {split!r} is not valid; expected 'training' or 'validation'")
        self.root = Path(root)
        self.split = split
        self.reduce_zero_label = reduce_zero_label
        self.transform = transform
        image_dir, label_dir = self.root / "images" / split, self.root / "annotations" / split
        for folder in (image_dir, label_dir):
            if not folder.is_dir():
                raise ValueError(f"ADE20k layout folder {folder} does not exist (root {self.root}, split {split!r})")
        images = sorted(path for path in image_dir.iterdir() if path.is_file() and is_image_file(path))
        if not images:
            raise ValueError(f"ADE20k layout folder {image_dir} holds no images")
        self.samples: list[tuple[Path, Path]] = []
        for image in images:
            label = label_dir / f"{image.stem}.png"
            if not label.is_file():
                raise ValueError(f"image {image} has no annotation; expected {label}")
            self.samples.append((image, label))
        log.info("ADE20k layout %s/%s: %d pairs", self.root, split, len(self.samples))
        self.share_broken_flags()

    def __len__(self) -> int:
        return len(self.samples)

    def describe(self, index: int) -> str:
        return str(self.samples[index][0])

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(image RGB uint8 (H, W, 3), label int64 (H, W)) before the transform."""
        image_path, label_path = self.samples[index]
        image, label = read_image(image_path), read_label(label_path)
        if image.shape[:2] != label.shape:
            raise BrokenSampleError(f"image {image_path} is {image.shape[:2]} but its label is {label.shape}")
        return image, (reduce_zero_label(label) if self.reduce_zero_label else label.astype(np.int64))

    def __getitem__(self, index: int) -> Any:
        """`transform(image, label)` or `(image, label)`; transform errors are raised, not skipped."""
        image, label = super().__getitem__(index)
        return self.transform(image, label) if self.transform is not None else (image, label)

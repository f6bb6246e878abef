"""MAE's training samples: an image crop, the segment it hides (W4) and the masking noise.

For sample (epoch, index) of a folder of images (any depth, sorted paths):
  1. the image is read (RGB; a broken file is skipped and counted);
  2. with a mask set (`data/formats/masks.py`, found by the image's path relative to the image
     folder, without its suffix), the segment whose area fraction is closest to
     `coverage_ratio` percent of the image is chosen, on the whole image;
  3. image and segment are cropped together, as torchvision's RandomResizedCrop (scale
     (0.2, 1) by default, bicubic when enlarging, area averaging when shrinking; the segment
     is resized with the image and thresholded at 0.5), then flipped horizontally with p 0.5;
  4. the per-patch masking noise is drawn.
Every random draw comes from RNGs seeded by (run seed, epoch, index), so a resumed run and
every worker / process see exactly the samples of an uninterrupted run.

An image without a mask set, or whose mask set is empty or malformed (logged once by file
name), has no segment (`has_segment` false): the method falls back to random patches for
it. `segment_report()` counts these at construction.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pretrainlab.data.formats._robust import SkippingDataset
from pretrainlab.data.formats.masks import MaskFormat, MaskSetError, mask_set_path, read_segment
from pretrainlab.data.images import is_image_file, read_image
from pretrainlab.data.transforms.views import random_resized_crop

log = logging.getLogger(__name__)

MaskedSample = tuple[Tensor, Tensor, bool, Tensor]  # image (C, S, S), hidden (1, S, S), has_segment, noise (L,)


def list_images(root: Path) -> list[Path]:
    """Every image file below `root`, sorted; raises FileNotFoundError / ValueError naming `root`."""
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    files = sorted(path for path in root.rglob("*") if path.is_file() and is_image_file(path))
    if not files:
        raise ValueError(f"image folder {root} holds no images (png, jpg, jpeg, bmp, tif, tiff)")
    return files


class SegmentMaskedImages(SkippingDataset):
    """(epoch, index) -> `MaskedSample` (see the module docstring).

    Args:
        root: folder of images.
        size: crop size S (a multiple of `patch_size`).
        patch_size: the ViT's patch size p; the noise has L = (S / p)² entries.
        mean, std: per-channel normalisation of [0, 1] pixels (3 values each).
        seed: the run seed.
        masks_root, mask_format, coverage_ratio: the segment masks; `masks_root` None = no segments.
        scale: RandomResizedCrop area range.
    """

    def __init__(
        self,
        root: Path,
        *,
        size: int,
        patch_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        seed: int,
        masks_root: Path | None = None,
        mask_format: MaskFormat = "sam_json",
        coverage_ratio: float = 50.0,
        scale: tuple[float, float] = (0.2, 1.0),
        flip_p: float = 0.5,
    ) -> None:
        super().__init__()
        if size % patch_size:
            raise ValueError(f"crop size {size} is not a multiple of the patch size {patch_size}")
        self.root = Path(root)
        self.files = list_images(self.root)
        self.size, self.patch_size = size, patch_size
        self.mean = np.asarray(mean, dtype=np.float32)
        self.inv_std = 1.0 / np.asarray(std, dtype=np.float32)
        self.seed = seed
        self.masks_root = masks_root
        self.mask_format: MaskFormat = mask_format
        self.coverage_ratio = coverage_ratio
        self.scale = scale
        self.flip_p = flip_p
        self.malformed_masks: set[str] = set()
        if masks_root is not None and not Path(masks_root).is_dir():
            raise FileNotFoundError(f"mask folder {masks_root} does not exist")
        self.share_broken_flags()

    def __len__(self) -> int:
        return len(self.files)

    def describe(self, index: int) -> str:
        return str(self.files[index])

    def stem(self, index: int) -> str:
        return self.files[index].relative_to(self.root).with_suffix("").as_posix()

    def segment_report(self) -> dict[str, Any]:
        """How many images have a mask set on disk (checked by file existence, not decoded)."""
        if self.masks_root is None:
            return {"images": len(self), "with_mask_set": 0, "without_mask_set": len(self)}
        found = sum(mask_set_path(self.masks_root, self.stem(i), self.mask_format).exists() for i in range(len(self)))
        return {"images": len(self), "with_mask_set": found, "without_mask_set": len(self) - found}

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(image uint8 (H, W, 3), chosen segment (H, W) bool or None)."""
        image = read_image(self.files[index], channels=3)
        return image, self._segment(index, image.shape[:2])

    def _segment(self, index: int, image_size: tuple[int, int]) -> np.ndarray | None:
        if self.masks_root is None:
            return None
        stem = self.stem(index)
        try:
            segment = read_segment(self.masks_root, stem, self.mask_format, self.coverage_ratio)
        except MaskSetError as error:
            if stem not in self.malformed_masks:
                self.malformed_masks.add(stem)
                log.warning("malformed mask set, using random patches for %s: %s", self.files[index], error)
            return None
        if segment is not None and segment.shape != image_size:
            if stem not in self.malformed_masks:
                self.malformed_masks.add(stem)
                log.warning("mask set of %s is %s, the image %s; using random patches", self.files[index],
                            segment.shape, image_size)  # fmt: skip
            return None
        return segment

    def __getitem__(self, key: tuple[int, int]) -> MaskedSample:  # type: ignore[override]
        epoch, index = key
        random.seed(hash((self.seed, epoch, index)))  # the crop draws from Python's `random`
        image, segment = super().__getitem__(index)
        has_segment = segment is not None
        layers = image if not has_segment else np.concatenate([image, segment[:, :, None].astype(np.uint8) * 255], 2)
        crop = random_resized_crop(layers, self.size, self.scale)  # (S, S, 3 or 4)
        if random.random() < self.flip_p:
            crop = crop[:, ::-1]
        pixels = (crop[:, :, :3].astype(np.float32) / 255.0 - self.mean) * self.inv_std  # (S, S, 3)
        hidden = crop[:, :, 3:] >= 128 if has_segment else np.zeros((self.size, self.size, 1), dtype=bool)
        num_patches = (self.size // self.patch_size) ** 2
        noise = np.random.default_rng((self.seed, epoch, index)).random(num_patches, dtype=np.float32)
        return (
            torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))),
            torch.from_numpy(np.ascontiguousarray(hidden.transpose(2, 0, 1))).float(),
            has_segment,
            torch.from_numpy(noise),
        )


def collate_masked(samples: list[MaskedSample]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """-> images (B, 3, S, S), hidden (B, 1, S, S) float 0/1, has_segment (B,) bool, noise (B, L)."""
    images, hidden, has_segment, noise = zip(*samples)
    return torch.stack(images), torch.stack(hidden), torch.tensor(has_segment), torch.stack(noise)

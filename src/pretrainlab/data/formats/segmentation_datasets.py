"""Semantic-segmentation datasets in the ADE20k and Cityscapes on-disk layouts.

ADE20k (ADEChallengeData2016)::

    root/images/{training,validation}/<name>.jpg
    root/annotations/{training,validation}/<name>.png     0 = "other", 1..150 = classes

Cityscapes (fine annotations, train ids made by cityscapesScripts' createTrainIdLabelImgs)::

    root/leftImg8bit/{train,val}/<city>/<name>_leftImg8bit.png
    root/gtFine/{train,val}/<city>/<name>_gtFine_labelTrainIds.png   0..18, 255 = ignore

Images are decoded with OpenCV as HWC uint8 **BGR** (as MMSeg's `LoadImageFromFile`), labels
with Pillow (as MMSeg's `LoadAnnotations`, which keeps palette PNG indices). Other image
channel counts (`channels` 1 or 4, BGR + X) and 16-bit scalings follow the rules of
`pretrainlab.data.images.read_image` and are put in BGR(X) order; only the default (3
channels, policy 'copy', scaling 'full') decodes exactly as MMSeg (`cv2.IMREAD_COLOR`, which
also applies a JPEG's EXIF orientation, where `read_image` does not). With
`reduce_zero_label` (the ADE20k default) label 0 becomes 255 and every other value v
becomes v − 1. Broken or missing files are skipped and counted (`SkippingDataset`); label
values outside [0, num_classes) ∪ {255} are a configuration error and raise `ValueError`.
"""

from __future__ import annotations

import io
import logging
import math
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from pretrainlab.data.formats._robust import BrokenSampleError, SkippingDataset
from pretrainlab.data.formats.fast_decode import decode_gray_png, decode_jpeg_bgr
from pretrainlab.data.images import (
    Uint16Scaling,
    check_channel_policy,
    check_channels,
    check_uint16_scaling,
    read_image,
)

log = logging.getLogger(__name__)

IGNORE_INDEX = 255

ADE20K_CLASSES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair",
    "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion",
    "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper",
    "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table",
    "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind", "coffee table",
    "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm", "kitchen island",
    "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light",
    "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman",
    "bottle", "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy",
    "washer", "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag",
    "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave", "pot",
    "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce",
    "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)  # fmt: skip

CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
    "bicycle",
)  # fmt: skip

# The official Cityscapes colours of the 19 train ids (cityscapesScripts `labels.py`), RGB.
CITYSCAPES_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip


def generated_palette(num_classes: int) -> tuple[tuple[int, int, int], ...]:
    """Distinct RGB colours by spreading the bits of (index + 1) over R, G, B (PASCAL VOC scheme).

    Index 0 maps to code 1, so no class is black; codes below 2**24 are all distinct.
    """
    colours = []
    for index in range(num_classes):
        code, rgb = index + 1, [0, 0, 0]
        for bit in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((code >> channel) & 1) << bit
            code >>= 3
        colours.append((rgb[0], rgb[1], rgb[2]))
    return tuple(colours)


# Generated, not the official ADE20k / MMSeg colours (which are not reproduced here).
ADE20K_PALETTE = generated_palette(len(ADE20K_CLASSES))


@dataclass(frozen=True)
class SegmentationSubset:
    """A deterministic subset of the sorted sample list: `every` n-th sample, or a `fraction`.

    A fraction f keeps n = max(1, round(f·N)) samples at evenly spaced positions
    floor(i·N / n), i < n — spread over the whole (sorted) list, e.g. over all cities.
    """

    fraction: float | None = None
    every: int | None = None

    def __post_init__(self) -> None:
        if (self.fraction is None) == (self.every is None):
            raise ValueError(f"give exactly one of fraction / every, got fraction={self.fraction}, every={self.every}")
        if self.fraction is not None and not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"subset fraction must be in (0, 1], got {self.fraction}")
        if self.every is not None and self.every < 1:
            raise ValueError(f"subset every must be a positive int, got {self.every}")

    def indices(self, num_samples: int) -> list[int]:
        """Kept positions of a list of `num_samples`, ascending."""
        if self.every is not None:
            return list(range(0, num_samples, self.every))
        assert self.fraction is not None
        if num_samples == 0:
            return []
        keep = max(1, round(self.fraction * num_samples))
        return [math.floor(i * num_samples / keep) for i in range(keep)]


@dataclass(frozen=True)
class SegmentationLayout:
    """What differs between dataset layouts: class names, palette, label encoding, pair finder."""

    name: str
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    reduce_zero_label: bool
    find_pairs: Callable[[Path, str], list[tuple[Path, Path]]]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _split_dir(root: Path, parent: str, split: str, names: dict[str, str]) -> Path:
    if split not in names:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(names)}")
    folder = root / parent / names[split]
    if not folder.is_dir():
        raise ValueError(f"expected the folder {folder} (split {split!r}) but it does not exist")
    return folder


def find_ade20k_pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    """(image, annotation) paths of an ADE20k-layout split ('train' or 'val'), sorted by image name."""
    names = {"train": "training", "val": "validation"}
    image_dir = _split_dir(root, "images", split, names)
    annotation_dir = root / "annotations" / names[split]
    images = sorted(image_dir.glob("*.jpg"))
    return [(image, annotation_dir / f"{image.stem}.png") for image in images]


def find_cityscapes_pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    """(image, train-id label) paths of a Cityscapes-layout split ('train' or 'val'), sorted."""
    names = {"train": "train", "val": "val"}
    image_dir = _split_dir(root, "leftImg8bit", split, names)
    label_dir = root / "gtFine" / names[split]
    suffix = "_leftImg8bit.png"
    pairs = []
    for image in sorted(image_dir.glob(f"*/*{suffix}")):
        stem = image.name[: -len(suffix)]
        pairs.append((image, label_dir / image.parent.name / f"{stem}_gtFine_labelTrainIds.png"))
    return pairs


LAYOUTS: dict[str, SegmentationLayout] = {
    "ade20k": SegmentationLayout("ade20k", ADE20K_CLASSES, ADE20K_PALETTE, True, find_ade20k_pairs),
    "cityscapes": SegmentationLayout("cityscapes", CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, False, find_cityscapes_pairs),
}


def reduce_zero_label(label: np.ndarray) -> np.ndarray:
    """Label with 0 → 255 and v → v − 1 otherwise (255 stays 255), as MMSeg's LoadAnnotations."""
    if label.dtype == np.uint8:
        return cv2.LUT(label, _REDUCE_ZERO_TABLE)
    reduced = label.astype(np.int64) - 1
    reduced[(label == 0) | (label == IGNORE_INDEX)] = IGNORE_INDEX
    return reduced


def _reduce_zero_table() -> np.ndarray:
    table = np.arange(256, dtype=np.int64) - 1  # v -> v - 1
    table[0] = table[IGNORE_INDEX] = IGNORE_INDEX
    return table.astype(np.uint8)


_REDUCE_ZERO_TABLE = _reduce_zero_table()


def check_label_values(label: np.ndarray, num_classes: int, source: str, ignore_index: int = IGNORE_INDEX) -> None:
    """Raise ValueError naming `source` when `label` has values outside [0, num_classes) ∪ {ignore_index}."""
    if label.size == 0 or (label.min() >= 0 and label.max() < num_classes):
        return
    bad = (label < 0) | ((label >= num_classes) & (label != ignore_index))
    if bad.any():
        values = np.unique(label[bad])
        raise ValueError(
            f"{source}: label values {values[:20].tolist()} lie outside [0, {num_classes}) ∪ {{{ignore_index}}} "
            f"(wrong num_classes or reduce_zero_label?)"
        )


def read_image_bgr(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 BGR image, decoded like MMSeg (`cv2.imdecode`, IMREAD_COLOR).

    Plain JPEGs take a faster decoder with the same pixels (`fast_decode.decode_jpeg_bgr`).
    Raises BrokenSampleError when the file is missing or undecodable; `cv2.imdecode` also
    rejects truncated JPEG/PNG files (where `cv2.imread` would return a grey-filled image).
    """
    if not path.is_file():
        raise BrokenSampleError(f"image {path} is missing")
    data = path.read_bytes()
    if not data:
        raise BrokenSampleError(f"image {path} is empty (0 bytes)")  # cv2.imdecode asserts on an empty buffer
    image = decode_jpeg_bgr(data)
    if image is None:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise BrokenSampleError(f"cannot decode image {path}")
    return image


def rgb_to_bgr(image: np.ndarray) -> np.ndarray:
    """(H, W, C) RGB(X) → BGR(X) (a contiguous copy) for C = 3 or 4; a 1-channel image is returned as is."""
    if image.shape[2] == 1:
        return image
    return image[:, :, [2, 1, 0, 3][: image.shape[2]]]  # fancy indexing copies


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# What Pillow raises on corrupt or cut-short files (besides UnidentifiedImageError, an OSError).
PILLOW_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error,
                        Image.DecompressionBombError)  # fmt: skip


def _is_8bit_gray_png(data: bytes) -> bool:
    """PNG whose IHDR says bit depth 8, colour type 0 (grayscale): byte 24 and byte 25."""
    return len(data) > 26 and data[:8] == _PNG_SIGNATURE and data[12:16] == b"IHDR" and data[24:26] == b"\x08\x00"


def read_label(path: Path) -> np.ndarray:
    """(H, W) label map; BrokenSampleError when missing, undecodable or not single-channel.

    8-bit grayscale PNGs (the usual label format) are decoded by libspng
    (`fast_decode.decode_gray_png`), or OpenCV when it declines — both faster than Pillow;
    everything else by Pillow, which keeps the indices of palette PNGs (OpenCV would turn
    them into colours). All give the stored values unchanged.
    """
    if not path.is_file():
        raise BrokenSampleError(f"annotation {path} is missing")
    data = path.read_bytes()
    if not data:
        raise BrokenSampleError(f"annotation {path} is empty (0 bytes)")
    if _is_8bit_gray_png(data):
        label = decode_gray_png(data)
        if label is None:
            label = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if label is None:
            raise BrokenSampleError(f"cannot decode annotation {path}")
    else:
        try:
            with Image.open(io.BytesIO(data)) as pil_label:
                label = np.array(pil_label)  # a writable copy (np.asarray would be read-only)
        except UnidentifiedImageError:
            raise BrokenSampleError(f"annotation {path} is not an image Pillow can read") from None
        except PILLOW_DECODE_ERRORS as error:
            raise BrokenSampleError(f"cannot decode annotation {path}: {type(error).__name__}: {error}") from None
    if label.ndim != 2:
        raise BrokenSampleError(f"annotation {path} has shape {label.shape}; expected a single-channel (H, W) map")
    return label


class SegmentationDataset(SkippingDataset):
    """(image BGR(X) uint8 (H, W, channels), label (H, W)) pairs of an ADE20k- or Cityscapes-layout folder.

    Args:
        root: dataset root folder.
        layout: 'ade20k', 'cityscapes', or a `SegmentationLayout` (e.g. a dataset's own class list).
        split: 'train' or 'val'.
        transform: called as `transform(image_bgr, label_uint8, rng)` (e.g. `SegTrainPipeline`);
            None returns the decoded arrays.
        reduce_zero_label: default from the layout (True for ADE20k, False for Cityscapes).
        subset: optional deterministic `SegmentationSubset`.
        channels, channel_policy, uint16_scaling, intensity_window: how images are read (see
            `pretrainlab.data.images.read_image` and the module docstring); the defaults decode as MMSeg.

    The transform's `rng` is one `np.random.Generator` per process, seeded from
    `torch.initial_seed()` (which DataLoader sets per worker and epoch), so runs with the
    same torch seed and worker count draw the same augmentations.
    """

    def __init__(
        self,
        root: str | Path,
        layout: str | SegmentationLayout = "ade20k",
        split: str = "train",
        transform: Callable[[np.ndarray, np.ndarray, np.random.Generator], Any] | None = None,
        reduce_zero_label: bool | None = None,
        subset: SegmentationSubset | None = None,
        *,
        channels: int = 3,
        channel_policy: str = "copy",
        uint16_scaling: Uint16Scaling = "full",
        intensity_window: Sequence[float] | None = None,
        replaces_broken: bool = True,
    ) -> None:
        super().__init__()
        self.replaces_broken = replaces_broken
        check_channels(channels)
        check_channel_policy(channel_policy)
        check_uint16_scaling(uint16_scaling, intensity_window)
        self.channels = channels
        self.channel_policy = channel_policy
        self.uint16_scaling: Uint16Scaling = uint16_scaling
        self.intensity_window = None if intensity_window is None else tuple(intensity_window)
        if not isinstance(layout, SegmentationLayout) and layout not in LAYOUTS:
            raise ValueError(f"unknown segmentation layout {layout!r}; known: {', '.join(sorted(LAYOUTS))}")
        self.layout = layout if isinstance(layout, SegmentationLayout) else LAYOUTS[layout]
        self.root = Path(root)
        self.split = split
        self.transform = transform
        self.reduce_zero_label = self.layout.reduce_zero_label if reduce_zero_label is None else reduce_zero_label
        pairs = self.layout.find_pairs(self.root, split)
        if not pairs:
            raise ValueError(f"no images found for layout {self.layout.name!r}, split {split!r} under {self.root}")
        self.pairs = pairs if subset is None else [pairs[i] for i in subset.indices(len(pairs))]
        self._rng: np.random.Generator | None = None
        self._rng_seed: int | None = None
        log.info("%s %s split %r: %d samples", self.layout.name, self.root, split, len(self.pairs))
        self.share_broken_flags()

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.layout.class_names

    @property
    def palette(self) -> tuple[tuple[int, int, int], ...]:
        return self.layout.palette

    @property
    def num_classes(self) -> int:
        return self.layout.num_classes

    def __len__(self) -> int:
        return len(self.pairs)

    def describe(self, index: int) -> str:
        return str(self.pairs[index][0])

    def load(self, index: int) -> tuple[Path, np.ndarray, np.ndarray]:
        """Decode pair `index`: (label path, image (H, W, channels) BGR(X) uint8, label (H, W), values unchecked)."""
        image_path, label_path = self.pairs[index]
        image = self._read_image(image_path)
        label = read_label(label_path)
        if label.shape != image.shape[:2]:
            raise BrokenSampleError(f"label {label_path} is {label.shape} but image {image_path} is {image.shape[:2]}")
        if self.reduce_zero_label:
            label = reduce_zero_label(label)
        return label_path, image, label

    def _read_image(self, path: Path) -> np.ndarray:
        """(H, W, channels) uint8 BGR(X): MMSeg's decode for the defaults, else `read_image` then BGR(X)."""
        is_default = (self.channels, self.channel_policy, self.uint16_scaling) == (3, "copy", "full")
        if is_default:
            return read_image_bgr(path)
        image = read_image(
            path,
            channels=self.channels,
            channel_policy=self.channel_policy,
            uint16_scaling=self.uint16_scaling,
            intensity_window=self.intensity_window,
        )
        return rgb_to_bgr(image)

    def _generator(self) -> np.random.Generator:
        seed = torch.initial_seed()
        if self._rng is None or self._rng_seed != seed:
            self._rng, self._rng_seed = np.random.default_rng(seed), seed
        return self._rng

    def __getitem__(self, index: int) -> Any:
        loaded = super().__getitem__(index)
        if loaded is None:  # broken, and this evaluation set does not replace it
            return None
        label_path, image, label = loaded
        check_label_values(label, self.num_classes, str(label_path))
        label = label.astype(np.uint8, copy=False)
        if self.transform is None:
            return image, label
        return self.transform(image, label, self._generator())

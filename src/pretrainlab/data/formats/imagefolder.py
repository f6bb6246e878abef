"""Image folders: `root/<class>/**/<image>`, one sub-folder per class (torchvision's layout).

Samples are uint8 (H, W, channels) numpy arrays in RGB(A) order, channels 1, 3 or 4 (see
`pretrainlab.data.images.read_image` for the channel and 16-bit policies); `transform`
receives that array and its result is returned with the class index: `(transform(image), label)`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pretrainlab.data.formats._robust import BrokenSampleError, ChannelMismatchError, SkippingDataset, examples
from pretrainlab.data.images import (
    Uint16Scaling,
    check_channel_policy,
    check_channels,
    check_uint16_scaling,
    is_image_file,
    read_image,
)

log = logging.getLogger(__name__)


def find_classes(root: Path) -> list[str]:
    """Sorted names of the non-hidden sub-folders of `root`."""
    if not root.is_dir():
        raise ValueError(f"image folder root {root} does not exist or is not a directory")
    classes = sorted(entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise ValueError(f"image folder root {root} has no class sub-folders; expected {root}/<class>/<image>")
    return classes


class ImageFolderDataset(SkippingDataset):
    """Classification dataset over `root/<class>/**/*.{png,jpg,jpeg,bmp,tif,tiff}`.

    Classes are the sorted sub-folder names (index = position); a class folder without
    images keeps its index (so train and val splits agree) and is logged. Broken files are
    skipped and counted by `SkippingDataset` (`num_broken`); a file whose channels do not fit
    `channels` / `channel_policy` raises `ChannelMismatchError` (a configuration error).

    Args:
        root: folder with one sub-folder per class.
        transform: called on the uint8 (H, W, channels) array; `None` returns the array.
        channels: 1, 3 or 4, the channels of every sample.
        channel_policy: `"copy"` or `"pick:<i>"`: how a file's channels become `channels`.
        uint16_scaling: `"full"`, `"minmax"` or `"window"` conversion of 16-bit files to 8 bits.
        intensity_window: (low, high) raw sensor values mapped to 0..255; with `"window"` only.
        in_memory: decode every image once at construction; broken files are then dropped
            from `samples` / `targets` and counted in `num_broken`, so `targets` matches
            what is returned.

    Attributes:
        classes: class names; `targets`: class index per sample; `samples`: (path, index) pairs.
    """

    def __init__(
        self,
        root: Path | str,
        *,
        transform: Callable[[np.ndarray], Any] | None = None,
        channels: int = 3,
        channel_policy: str = "copy",
        uint16_scaling: Uint16Scaling = "full",
        intensity_window: Sequence[float] | None = None,
        in_memory: bool = False,
    ) -> None:
        super().__init__()
        check_channels(channels)
        check_channel_policy(channel_policy)
        check_uint16_scaling(uint16_scaling, intensity_window)
        self.root = Path(root)
        self.transform = transform
        self.channels = channels
        self.channel_policy = channel_policy
        self.uint16_scaling: Uint16Scaling = uint16_scaling
        self.intensity_window = None if intensity_window is None else tuple(intensity_window)
        self.classes = find_classes(self.root)
        self.class_to_idx = {name: index for index, name in enumerate(self.classes)}
        self.samples: list[tuple[Path, int]] = []
        for name in self.classes:
            files = sorted(path for path in (self.root / name).rglob("*") if path.is_file() and is_image_file(path))
            if not files:
                log.warning("class folder %s holds no images", self.root / name)
            self.samples.extend((path, self.class_to_idx[name]) for path in files)
        if not self.samples:
            raise ValueError(f"image folder {self.root} has class folders {self.classes} but no images in them")
        self.dropped: list[Path] = []
        self.images: np.ndarray | list[np.ndarray] | None = None
        if in_memory:
            self._decode_all()
        self.targets = [label for _, label in self.samples]
        self.share_broken_flags()

    def _decode_all(self) -> None:
        kept: list[tuple[Path, int]] = []
        decoded: list[np.ndarray] = []
        for path, label in self.samples:
            try:
                decoded.append(self._read(path))
            except ChannelMismatchError:
                raise
            except (BrokenSampleError, OSError, ValueError) as error:
                log.warning("dropping broken %s: %s", path, error)
                self.dropped.append(path)
                continue
            kept.append((path, label))
        if not kept:
            raise ValueError(f"image folder {self.root}: all {len(self.samples)} images are broken")
        self.samples = kept
        same_shape = all(image.shape == decoded[0].shape for image in decoded)
        self.images = np.stack(decoded) if same_shape else decoded  # (N, H, W, channels) when sizes agree
        for image in [self.images] if same_shape else decoded:
            image.flags.writeable = False  # samples are views: a transform must not modify them in place
        log.log(logging.WARNING if self.dropped else logging.INFO, "decoded %d images of %s into memory (%d broken "
                "dropped%s)", len(kept), self.root, len(self.dropped),
                examples([path.relative_to(self.root) for path in self.dropped]))  # fmt: skip

    def _read(self, path: Path) -> np.ndarray:
        return read_image(
            path,
            channels=self.channels,
            channel_policy=self.channel_policy,
            uint16_scaling=self.uint16_scaling,
            intensity_window=self.intensity_window,
        )

    @property
    def num_broken(self) -> int:
        """Broken files seen here: dropped at load time (in_memory) plus skipped while iterating."""
        return len(self.dropped) + len(self.broken_indices)

    def __len__(self) -> int:
        return len(self.samples)

    def describe(self, index: int) -> str:
        return str(self.samples[index][0])

    def load(self, index: int) -> tuple[np.ndarray, int]:
        """(image uint8 (H, W, channels), label) of sample `index`, before the transform."""
        path, label = self.samples[index]
        return (self.images[index] if self.images is not None else self._read(path)), label

    def __getitem__(self, index: int) -> tuple[Any, int]:
        """(transform(image), label); the transform runs outside the broken-file handling, so its
        own errors are raised rather than taken for a broken file."""
        image, label = super().__getitem__(index)
        return (self.transform(image) if self.transform is not None else image), label

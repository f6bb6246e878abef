"""CIFAR-10 / CIFAR-100 in their python pickle layout (Krizhevsky, 2009, "Learning Multiple Layers
of Features from Tiny Images").

    cifar-10-batches-py/  data_batch_1 .. data_batch_5 (train), test_batch, batches.meta {label_names}
    cifar-100-python/     train, test, meta {fine_label_names, coarse_label_names}

A batch is a pickled dict: `data`, uint8 (N, 3072), one 32x32 image per row stored channel-planar
(the 1024 red values in row-major order, then green, then blue), and one label per row: `labels`
(CIFAR-10) or `fine_labels` and `coarse_labels` (CIFAR-100). The official files are Python 2
pickles; they are read with `encoding="latin1"` and keys or names stored as bytes are decoded, so
files re-saved by other tools read the same.

Unpickling can run code: batches are read by an unpickler that builds only dicts, lists, strings,
numbers and numpy arrays, and refuses anything else, naming the file.

`CifarDataset` has the interface of `ImageFolderDataset` (`(transform(image), label)` items,
`classes`, `targets`, the channel policy), so training views and evaluation loaders take it
unchanged; `CifarSourceConfig` selects it in a config (`data.source: {name: cifar}`).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, model_validator

from pretrainlab.config.component import Component
from pretrainlab.data.formats._robust import ChannelMismatchError, SkippingDataset
from pretrainlab.data.images import check_channel_policy, check_channels, select_channels

if TYPE_CHECKING:
    from pretrainlab.data.config import DataConfig, Split

CifarVariant = Literal["cifar10", "cifar100"]
CifarLabels = Literal["fine", "coarse"]
CifarSplit = Literal["train", "test"]

IMAGE_SIZE = 32
ROW_LENGTH = 3 * IMAGE_SIZE * IMAGE_SIZE  # 3072
PICKLE_PROTOCOL = 2  # the official release's; readable by Python 2 and 3 tools alike
_ALLOWED_GLOBALS = {  # what pickled numpy arrays (and Python 3 bytes at protocol 2, empty ones too) need
    ("__builtin__", "bytes"),
    ("builtins", "bytes"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


@dataclass(frozen=True)
class _Layout:
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str


LAYOUTS: dict[str, _Layout] = {
    "cifar10": _Layout(
        "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), "batches.meta"
    ),
    "cifar100": _Layout("cifar-100-python", ("train",), ("test",), "meta"),
}


def _keys(variant: CifarVariant, labels: CifarLabels) -> tuple[str, str]:
    """(key of the label list in a batch, key of the class names in the meta file)."""
    if variant == "cifar10":
        if labels != "fine":
            raise ValueError(f"labels={labels!r} applies to cifar100; CIFAR-10 has one label set (use 'fine')")
        return "labels", "label_names"
    return f"{labels}_labels", f"{labels}_label_names"


def _check_variant(variant: str) -> _Layout:
    if variant not in LAYOUTS:
        raise ValueError(f"CIFAR variant {variant!r} is not valid; expected one of {sorted(LAYOUTS)}")
    return LAYOUTS[variant]


class _RefusedGlobal(Exception):
    """A pickle that asks for something else than what arrays, lists and strings need."""


class _ArrayUnpickler(pickle.Unpickler):
    """Builds only plain containers, strings, numbers and numpy arrays."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise _RefusedGlobal(f"refusing to load {module}.{name}: a CIFAR pickle holds only arrays, lists and "
                                 "strings")  # fmt: skip
        return super().find_class(module, name)


def _text(value: object) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else str(value)


def load_cifar_pickle(path: Path) -> dict[str, Any]:
    """The dict pickled in `path`, its keys as str.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: naming `path`, for a truncated or corrupt pickle, one that would build other objects
            than arrays, lists and strings, or one that is not a dict.
    """
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR file {path} not found")
    try:
        with path.open("rb") as file:
            content = _ArrayUnpickler(file, encoding="latin1").load()
    except _RefusedGlobal as error:
        raise ValueError(f"{path}: {error}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as error:
        # a cut-short or corrupt pickle fails in any of these ways
        raise ValueError(f"{path}: not a readable CIFAR pickle, truncated or corrupt "
                         f"({type(error).__name__}: {error})") from None  # fmt: skip
    if not isinstance(content, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(content).__name__}")
    return {_text(key): value for key, value in content.items()}


def _require(content: dict[str, Any], keys: Sequence[str], path: Path, what: str) -> None:
    missing = [key for key in keys if key not in content]
    if missing:
        raise ValueError(f"{path}: missing key(s) {missing} of a {what}; found {sorted(content)}")


def read_cifar_classes(
    folder: Path | str, variant: CifarVariant = "cifar10", labels: CifarLabels = "fine"
) -> list[str]:
    """Class names (index = label) from the meta file of `folder`."""
    layout = _check_variant(variant)
    _, names_key = _keys(variant, labels)
    path = Path(folder) / layout.meta
    content = load_cifar_pickle(path)
    _require(content, [names_key], path, f"{variant} meta file")
    return [_text(name) for name in content[names_key]]


def _read_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows (N, 3072) uint8, labels (N,) int64) of one batch file, checked."""
    content = load_cifar_pickle(path)
    _require(content, ["data", label_key], path, "CIFAR batch")
    rows = content["data"]
    if not isinstance(rows, np.ndarray) or rows.ndim != 2 or rows.shape[1] != ROW_LENGTH or rows.dtype != np.uint8:
        got = f"{rows.dtype} array of shape {rows.shape}" if isinstance(rows, np.ndarray) else type(rows).__name__
        raise ValueError(f"{path}: 'data' is a {got}; expected uint8 rows of length {ROW_LENGTH} (N, {ROW_LENGTH}): "
                         f"{IMAGE_SIZE}x{IMAGE_SIZE} RGB, channel-planar")  # fmt: skip
    labels = np.asarray(content[label_key], dtype=np.int64)
    if labels.shape != (len(rows),):
        raise ValueError(f"{path}: {labels.size} '{label_key}' for {len(rows)} rows; expected one per row")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{path}: '{label_key}' range {labels.min()}..{labels.max()} is outside the "
                         f"{num_classes} classes of the meta file")  # fmt: skip
    return rows, labels


def rows_to_images(rows: np.ndarray) -> np.ndarray:
    """(N, 3072) channel-planar rows -> (N, 32, 32, 3) HWC RGB uint8."""
    return np.ascontiguousarray(rows.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE).transpose(0, 2, 3, 1))


def images_to_rows(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) HWC RGB uint8 -> (N, 3072) channel-planar rows."""
    if images.ndim != 4 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3) or images.dtype != np.uint8:
        raise ValueError(f"CIFAR images must be uint8 (N, {IMAGE_SIZE}, {IMAGE_SIZE}, 3); got {images.dtype} "
                         f"{images.shape}")  # fmt: skip
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2)).reshape(len(images), ROW_LENGTH)


@dataclass(frozen=True)
class CifarArrays:
    """One split: images (N, 32, 32, 3) uint8 RGB, labels (N,) int64, class names (index = label)."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]


def read_cifar(
    folder: Path | str, *, variant: CifarVariant = "cifar10", split: CifarSplit = "train", labels: CifarLabels = "fine"
) -> CifarArrays:
    """Read split `split` of the CIFAR folder `folder` (`cifar-10-batches-py` or `cifar-100-python`).

    Args:
        labels: CIFAR-100's `fine` (100 classes) or `coarse` (20 superclasses) labels.

    Raises:
        FileNotFoundError: a batch or the meta file is missing (the message names it).
        ValueError: naming the file, for a truncated pickle, missing keys or rows of the wrong length.
    """
    layout = _check_variant(variant)
    if split not in ("train", "test"):
        raise ValueError(f"CIFAR split {split!r} is not valid; expected 'train' or 'test'")
    label_key, _ = _keys(variant, labels)
    folder = Path(folder)
    classes = read_cifar_classes(folder, variant, labels)
    batches = [_read_batch(folder / name, label_key, len(classes)) for name in getattr(layout, split)]
    rows = np.concatenate([batch[0] for batch in batches])
    return CifarArrays(rows_to_images(rows), np.concatenate([batch[1] for batch in batches]), classes)


def _dump(path: Path, content: dict[str, Any]) -> None:
    with path.open("wb") as file:
        pickle.dump(content, file, protocol=PICKLE_PROTOCOL)


def write_cifar10(
    folder: Path | str,
    *,
    train: tuple[np.ndarray, Sequence[int]],
    test: tuple[np.ndarray, Sequence[int]],
    label_names: Sequence[str],
) -> None:
    """Write CIFAR-10's python layout into `folder`: the train images split over `data_batch_1..5`
    (in order, sizes differing by at most one), `test_batch` and `batches.meta`.

    Args:
        train, test: (images (N, 32, 32, 3) uint8 RGB, labels (N,) in 0..len(label_names) - 1).
        label_names: class names, index = label.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    layout = LAYOUTS["cifar10"]
    for name, (images, labels) in (("train", train), ("test", test)):
        if len(images) != len(labels) or any(not 0 <= label < len(label_names) for label in labels):
            raise ValueError(f"CIFAR {name} split: {len(images)} images, {len(labels)} labels; expected one label in "
                             f"0..{len(label_names) - 1} per image")  # fmt: skip
    rows, labels = images_to_rows(train[0]), [int(label) for label in train[1]]
    parts = np.array_split(np.arange(len(rows)), len(layout.train))
    for number, (name, part) in enumerate(zip(layout.train, parts, strict=True), start=1):
        batch = {"batch_label": f"training batch {number} of {len(parts)}", "data": rows[part],
                 "labels": [labels[i] for i in part], "filenames": [f"{i:06d}.png" for i in part]}  # fmt: skip
        _dump(folder / name, batch)
    test_rows = images_to_rows(test[0])
    _dump(folder / layout.test[0], {"batch_label": "testing batch 1 of 1", "data": test_rows,
                                    "labels": [int(label) for label in test[1]],
                                    "filenames": [f"{i:06d}.png" for i in range(len(test_rows))]})  # fmt: skip
    _dump(folder / layout.meta, {"label_names": list(label_names), "num_cases_per_batch": len(parts[0]),
                                 "num_vis": ROW_LENGTH})  # fmt: skip


class CifarDataset(SkippingDataset):
    """A CIFAR-10 / CIFAR-100 split as `(transform(image), label)` samples, image uint8 (32, 32, channels).

    The whole split is held in memory (it is one array). CIFAR images are 8-bit RGB: `channel_policy`
    `copy` (channels 3) or `pick:<i>` applies; `learned` (single-channel images) is refused.

    Args:
        folder: `cifar-10-batches-py` or `cifar-100-python` folder.
        variant: `cifar10` or `cifar100`.
        split: `train` (the training batches) or `test`.
        labels: CIFAR-100's `fine` or `coarse` labels.
        transform: called on the uint8 (32, 32, channels) array; `None` returns the array.
        channels, channel_policy: as for `read_image` (`pretrainlab.data.images`).

    Attributes:
        classes: class names; `targets`: label per sample; `images`: (N, 32, 32, 3) uint8 as stored.
    """

    def __init__(
        self,
        folder: Path | str,
        *,
        variant: CifarVariant = "cifar10",
        split: CifarSplit = "train",
        labels: CifarLabels = "fine",
        transform: Callable[[np.ndarray], Any] | None = None,
        channels: int = 3,
        channel_policy: str = "copy",
    ) -> None:
        super().__init__()
        check_channels(channels)
        check_channel_policy(channel_policy)
        self.folder = Path(folder)
        self.split = split
        self.transform = transform
        self.channels = channels
        self.channel_policy = channel_policy
        arrays = read_cifar(self.folder, variant=variant, split=split, labels=labels)
        if not len(arrays.images):
            raise ValueError(f"CIFAR folder {self.folder}: the {split} split holds no images")
        self.images = arrays.images
        self.images.flags.writeable = False  # samples are views: a transform must not modify them in place
        self.targets: list[int] = arrays.labels.tolist()
        self.classes = arrays.classes
        try:  # the policy fits every image or none: check it once, as a configuration error
            select_channels(self.images[0], channels, channel_policy)
        except ChannelMismatchError as error:
            raise ChannelMismatchError(f"{self.folder} ({split}): {error}") from None
        self.share_broken_flags()

    def __len__(self) -> int:
        return len(self.images)

    def describe(self, index: int) -> str:
        return f"{self.folder} {self.split} image {index}"

    def load(self, index: int) -> tuple[np.ndarray, int]:
        """(image uint8 (32, 32, channels), label) of sample `index`, before the transform."""
        return select_channels(self.images[index], self.channels, self.channel_policy), self.targets[index]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label = super().__getitem__(index)
        return (self.transform(image) if self.transform is not None else image), label


class CifarSourceConfig(Component):
    """`data.source` for CIFAR python batches under `data.root / folder`: train = the training batches,
    val = the test batch. Images are read with `data.channels` / `data.channel_policy` (8-bit, so the
    16-bit options do not apply; the split is always in memory)."""

    name: Literal["cifar"]
    variant: CifarVariant = "cifar10"
    labels: CifarLabels = Field("fine", description="cifar100: fine (100 classes) | coarse (20 superclasses)")
    folder: str | None = Field(None, description="under data.root; null = cifar-10-batches-py / cifar-100-python")

    @model_validator(mode="after")
    def _check_labels(self) -> CifarSourceConfig:
        _keys(self.variant, self.labels)
        return self

    def directory(self, data: DataConfig) -> Path:
        return data.root / (self.folder or LAYOUTS[self.variant].folder)

    def check(self, data: DataConfig) -> None:
        """The synthetic generator writes CIFAR-10 batches into `cifar-10-batches-py` when asked to."""
        if data.synthetic is None:
            return
        if self.variant != "cifar10" or self.folder not in (None, LAYOUTS["cifar10"].folder):
            raise ValueError(f"data.source cifar ({self.variant}, folder {self.folder}): the synthetic generator "
                             "writes CIFAR-10 batches into cifar-10-batches-py; use variant cifar10 and the default "
                             "folder, or data.synthetic: null for real data")  # fmt: skip
        if not data.synthetic.cifar_layout:
            raise ValueError("data.source cifar reads CIFAR batches: set data.synthetic.cifar_layout: true for the "
                             "generator to write them (or data.synthetic: null for real data)")  # fmt: skip

    def paths(self, data: DataConfig, split: Split) -> list[Path]:
        layout = LAYOUTS[self.variant]
        names = layout.train if split == "train" else layout.test
        return [self.directory(data) / name for name in (*names, layout.meta)]

    def class_names(self, data: DataConfig) -> list[str]:
        if data.synthetic is not None:
            return data.synthetic.class_names
        return read_cifar_classes(self.directory(data), self.variant, self.labels)

    def open(
        self, data: DataConfig, split: Split, transform: Callable[[np.ndarray], Any] | None = None
    ) -> CifarDataset:
        return CifarDataset(self.directory(data), variant=self.variant, split="train" if split == "train" else "test",
                            labels=self.labels, transform=transform, channels=data.channels,
                            channel_policy=data.channel_policy)  # fmt: skip

"""The data section of a config: where the images are, in which format, how they become tensors,
batch sizes.

`data.source` selects the classification dataset format by `name`, with its own typed options:

    source: {name: imagefolder}                        data.train_dir / data.val_dir (the default)
    source: {name: cifar, variant: cifar100, labels: coarse}        CIFAR python batches
    source: {name: coco_crops, train_json: ..., min_size: 16}       object crops of COCO files
    source: {name: fiftyone_crops, dataset: ...}                    object crops of a FiftyOne dataset

Every source provides the `DataSource` methods; `DataConfig.dataset(split)` opens a split with the
read options of this section, as training views and evaluation loaders need it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol, cast

from pydantic import Field, model_validator
from torch.utils.data import Dataset

from pretrainlab.config.component import Component, Strict
from pretrainlab.data.formats.cifar import CifarSourceConfig
from pretrainlab.data.formats.crops import CocoCropsSourceConfig, FiftyOneCropsSourceConfig
from pretrainlab.data.formats.imagefolder import ImageFolderDataset, find_classes
from pretrainlab.data.images import LEARNED_POLICY, check_channel_policy, check_uint16_scaling, default_mean_std
from pretrainlab.data.synthetic import SHAPE_CLASSES
from pretrainlab.registry import Registry

Split = Literal["train", "val"]


class SyntheticDataConfig(Strict):
    """Parameters of `pretrainlab data synth`, used when the data root is missing."""

    seed: int = Field(0, ge=0)
    num_classes: int = Field(8, ge=2, le=10)
    image_size: int = Field(32, ge=16)
    num_train: int = Field(20000, ge=10)
    num_val: int = Field(2000, ge=10)
    seg_image_size: int = Field(64, ge=32)
    num_seg_train: int = Field(1000, ge=1)
    num_seg_val: int = Field(200, ge=1)
    classification_format: Literal["rgb8", "gray16"] = Field(
        "rgb8", description="rgb8: 8-bit RGB PNGs; gray16: 16-bit single-channel PNGs (thermal-like)"
    )
    cifar_layout: bool = Field(False, description="also write the classification images as CIFAR-10 batches")
    num_detection_train: int = Field(0, ge=0, description="images of the COCO detection set (train)")
    num_detection_val: int = Field(0, ge=0, description="images of the COCO detection set (val)")
    detection_image_size: int = Field(96, ge=32)

    @model_validator(mode="after")
    def _check_cifar_layout(self) -> SyntheticDataConfig:
        if self.cifar_layout and (self.image_size != 32 or self.classification_format != "rgb8"):
            raise ValueError(f"cifar_layout writes 32x32 8-bit RGB rows: it needs image_size 32 and classification_"
                             f"format rgb8; got {self.image_size}, {self.classification_format}")  # fmt: skip
        return self

    @property
    def class_names(self) -> list[str]:
        """The classes of every synthetic classification split and of the detection set."""
        return list(SHAPE_CLASSES[: self.num_classes])


class DataSource(Protocol):
    """What every `data.source` config provides."""

    name: str

    def check(self, data: DataConfig) -> None:
        """Raise ValueError when the source does not fit the rest of `data` (e.g. the synthetic layout)."""

    def paths(self, data: DataConfig, split: Split) -> list[Path]:
        """The files and folders `split` is read from (checked to exist before a run)."""

    def class_names(self, data: DataConfig) -> list[str]:
        """Class names, index = label (for synthetic data, known before it is written)."""

    def open(self, data: DataConfig, split: Split, transform: Callable[[Any], Any] | None = None) -> Dataset:
        """The split as `(transform(image uint8 (H, W, channels)), label)` samples with `classes` and `targets`."""


class ImageFolderSourceConfig(Component):
    """`data.source` for `data.root / data.train_dir` and `data.val_dir`, one sub-folder per class."""

    name: Literal["imagefolder"]

    def check(self, data: DataConfig) -> None:
        """Nothing to check: the synthetic generator always writes the ImageFolder layout."""

    def paths(self, data: DataConfig, split: Split) -> list[Path]:
        return [data.root / (data.train_dir if split == "train" else data.val_dir)]

    def class_names(self, data: DataConfig) -> list[str]:
        if data.synthetic is not None:
            return sorted(data.synthetic.class_names)  # the class folders, sorted like `find_classes`
        return find_classes(data.root / data.train_dir)

    def open(self, data: DataConfig, split: Split, transform: Callable[[Any], Any] | None = None
             ) -> ImageFolderDataset:  # fmt: skip
        """The split's images; ValueError when its class folders are not the training split's (a missing or
        extra folder would shift every label after it)."""
        folder = self.paths(data, split)[0]
        classes, found = self.class_names(data), find_classes(folder)
        if found != classes:
            missing, extra = [c for c in classes if c not in found], [c for c in found if c not in classes]
            raise ValueError(f"{folder}: class folders differ from the training classes {classes} (missing "
                             f"{missing}, extra {extra}); every split needs the same class folders, an empty one "
                             "keeps its label")  # fmt: skip
        return ImageFolderDataset(folder, transform=transform, in_memory=data.in_memory, **data.read_options())


# The sources' classes sit beside their datasets; their builder opens a split: (config, data, split, transform).
DATA_SOURCES: Registry[Component] = Registry("data source", Component)
DATA_SOURCES.register(ImageFolderSourceConfig)(ImageFolderSourceConfig.open)
DATA_SOURCES.register(CifarSourceConfig)(CifarSourceConfig.open)
DATA_SOURCES.register(CocoCropsSourceConfig)(CocoCropsSourceConfig.open)
DATA_SOURCES.register(FiftyOneCropsSourceConfig)(FiftyOneCropsSourceConfig.open)


class DataConfig(Strict):
    root: Path = Path("data/synthetic")
    synthetic: SyntheticDataConfig | None = Field(
        default_factory=SyntheticDataConfig,
        description="generate the synthetic dataset at `root` if it is missing; null for real data",
    )
    source: DATA_SOURCES.config_type("imagefolder") = Field(  # type: ignore[valid-type]
        default_factory=DATA_SOURCES.default_factory("imagefolder"),
        description="dataset format: imagefolder | cifar | coco_crops | fiftyone_crops, with its options",
    )
    train_dir: str = Field("classification/train", description="imagefolder source (and MAE): training images")
    val_dir: str = Field("classification/val", description="imagefolder source: validation images")
    image_size: int = Field(32, ge=8, description="evaluation image size (kNN features)")
    channels: Literal[1, 3, 4] = Field(3, description="channels the model receives")
    mean: tuple[float, ...] | None = Field(None, description="per channel, of 0..1 pixels; null = default for `channels`")
    std: tuple[float, ...] | None = Field(None, description="per channel; null = default for `channels`")
    channel_policy: str = Field("copy", description=(
        "copy (1 -> 3 channels by repetition) | pick:<i> (channel i) | learned (channels 1: a learned 1x1 conv "
        "in front of the backbone makes its 3)"))  # fmt: skip
    uint16_scaling: Literal["full", "minmax", "window"] = Field("full", description="16-bit files to 8 bits")
    intensity_window: tuple[int, int] | None = Field(None, description="with uint16_scaling window: raw (low, high)")
    in_memory: bool = Field(True, description="decode all images once (small images only)")
    num_workers: int = Field(0, ge=0)
    batch_size: int = Field(256, ge=1, description="per-device training batch size")
    eval_batch_size: int = Field(512, ge=1)

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        check_channel_policy(self.channel_policy)
        if self.channel_policy == LEARNED_POLICY and self.channels != 1:
            raise ValueError(f"channel_policy learned feeds 1 channel to a learned 1x1 conv (1 -> 3) in front of the "
                             f"backbone: channels must be 1, got {self.channels}")  # fmt: skip
        self.data_source.check(self)
        for key in ("mean", "std"):
            value = getattr(self, key)
            if value is not None and len(value) != self.channels:
                raise ValueError(f"{key} has {len(value)} values but channels={self.channels}; give one per channel")
        if self.std is not None and min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")
        check_uint16_scaling(self.uint16_scaling, self.intensity_window)  # a window only with `window`, and valid
        return self

    @property
    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) of length `channels`: the configured ones or the defaults for the channel count."""
        default_mean, default_std = default_mean_std(self.channels)
        return self.mean or default_mean, self.std or default_std

    def read_options(self) -> dict[str, object]:
        """Keyword arguments of `read_image` / `ImageFolderDataset` for these settings."""
        return {"channels": self.channels, "channel_policy": self.channel_policy,
                "uint16_scaling": self.uint16_scaling, "intensity_window": self.intensity_window}  # fmt: skip

    @property
    def data_source(self) -> DataSource:
        """`source` with the `DataSource` methods (every registered source class has them)."""
        return cast(DataSource, self.source)

    def dataset(self, split: Split, transform: Callable[[Any], Any] | None = None) -> Dataset:
        """Split `split` of the dataset `source` names, read with these settings: `(transform(image), label)`
        samples, image uint8 (H, W, channels), with `classes` and `targets`."""
        return DATA_SOURCES.build(self.source, self, split, transform)

    def class_names(self) -> list[str]:
        """Class names of the dataset, index = label."""
        return self.data_source.class_names(self)

    def describe(self, split: Split) -> str:
        """Where `split` is read from, for logs."""
        paths = self.data_source.paths(self, split)
        return ", ".join(map(str, paths)) if paths else f"{self.data_source.name} {split}"

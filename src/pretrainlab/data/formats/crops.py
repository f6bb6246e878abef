"""Object crops from detection annotations: a classification dataset of what the boxes hold.

Annotations come from COCO JSON files (`images` with `id`, `file_name`, `width`, `height`;
`annotations` with `image_id`, `category_id`, `bbox` = [x, y, w, h] in pixels, optional
`iscrowd`; `categories` with `id`, `name`) or, when FiftyOne is installed, from a FiftyOne
dataset's `Detections` field (relative boxes, split by sample tags).

Which boxes become crops (`CropOptions`), in this order:

1. `merge` renames categories (name -> new name; several names may map to one);
2. the classes are `classes` (in that order: label = position) or else every merged category
   name, in category-id order of the train file; boxes of other categories are dropped, and so
   are crowd boxes (`iscrowd: 1`: one box over many objects) and empty ones (w or h <= 0);
3. `min_size` drops boxes whose shorter side is below it (pixels);
4. `crops: all` keeps every remaining box of an image, `largest` the one of largest area;
5. `padding` grows a box by that fraction of its width on the left and on the right, and of its
   height at the top and at the bottom; it is then clipped to the image and rounded outwards
   to whole pixels.

Every split holds the same classes: a class without any crop in a split, or a category of a
split that the classes lack (with `classes` unset), is refused with the class and the split
named, since its accuracy would be undefined or its label unknown.

Crops are cut from the image files as `read_image` reads them (8-bit colour, 16-bit single
channel, with the channel policy and 16-bit scaling; minmax scaling sees the whole image).
Unreadable images are skipped and counted like `ImageFolderDataset`'s (`num_broken`).
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, model_validator

from pretrainlab.config.component import Component, Strict
from pretrainlab.data.formats._robust import BrokenSampleError, ChannelMismatchError, SkippingDataset, examples
from pretrainlab.data.images import (
    Uint16Scaling,
    check_channel_policy,
    check_channels,
    check_uint16_scaling,
    read_image,
)
from pretrainlab.registry import did_you_mean

if TYPE_CHECKING:
    from pretrainlab.data.config import DataConfig, Split

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]  # x, y, w, h in pixels


@dataclass(frozen=True)
class Detection:
    category: str
    box: Box


@dataclass(frozen=True)
class DetectionImage:
    """One annotated image; `file` is relative to the image folder (or absolute)."""

    file: str
    width: int
    height: int
    detections: tuple[Detection, ...]


@dataclass(frozen=True)
class DetectionSet:
    """The images of one split file and its category names (in category-id order)."""

    categories: tuple[str, ...]
    images: tuple[DetectionImage, ...]


@dataclass(frozen=True)
class Crop:
    """One sample: the image file, the box (x0, y0, x1, y1) in whole pixels, end exclusive, and the label."""

    path: Path
    box: tuple[int, int, int, int]
    label: int


class CropOptions(Strict):
    """Which boxes become crops; see the module docstring for the order the options apply in."""

    crops: Literal["largest", "all"] = Field("all", description="all boxes of an image, or its largest one")
    min_size: float = Field(0.0, ge=0.0, description="pixels: boxes whose shorter side is smaller are dropped")
    classes: list[str] | None = Field(None, min_length=1, description=(
        "class subset (names after merge), label = position; null = every category"))  # fmt: skip
    merge: dict[str, str] = Field(default_factory=dict, description="category name -> new name, before `classes`")
    padding: float = Field(0.0, ge=0.0, description="fraction of the box width / height added on each side")

    @model_validator(mode="after")
    def _check_classes(self) -> CropOptions:
        if self.classes is not None and len(set(self.classes)) != len(self.classes):
            repeated = sorted(name for name, count in Counter(self.classes).items() if count > 1)
            raise ValueError(f"classes lists {repeated} more than once; give each class once")
        return self


def crop_classes(categories: Sequence[str], options: CropOptions, source: str) -> list[str]:
    """The class names (index = label) the options make of `categories`, from the file `source`.

    Raises:
        ValueError: a `merge` key that is not a category, or a `classes` name that no merged category has.
    """
    unknown = [name for name in options.merge if name not in categories]
    if unknown:
        close = did_you_mean(unknown[0], list(categories))
        raise ValueError(f"{source}: merge names {unknown} are not categories{close} known: {', '.join(categories)}")
    merged = list(dict.fromkeys(options.merge.get(name, name) for name in categories))
    if options.classes is None:
        return merged
    missing = [name for name in options.classes if name not in merged]
    if missing:
        raise ValueError(f"{source}: classes {missing} are not categories (after merge)"
                         f"{did_you_mean(missing[0], merged)} known: {', '.join(merged)}")  # fmt: skip
    return list(options.classes)


def _padded_box(box: Box, padding: float, width: int, height: int) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) whole pixels of `box` grown by `padding` and clipped to the image; None when empty."""
    x, y, w, h = box
    if w <= 0 or h <= 0:
        return None
    x0, y0 = max(0, math.floor(x - padding * w)), max(0, math.floor(y - padding * h))
    x1, y1 = min(width, math.ceil(x + w + padding * w)), min(height, math.ceil(y + h + padding * h))
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def select_crops(
    images: Iterable[DetectionImage], image_dir: Path, classes: Sequence[str], options: CropOptions, split: str
) -> list[Crop]:
    """The crops of `images` (files under `image_dir`) by `options`, labelled by position in `classes`.

    Raises:
        ValueError: a class has no crop in this split (`split` names it in the message).
    """
    label_of = {name: label for label, name in enumerate(classes)}
    crops: list[Crop] = []
    num_empty = 0
    for image in images:
        kept: list[tuple[float, Crop]] = []  # (box area, crop)
        for detection in image.detections:
            label = label_of.get(options.merge.get(detection.category, detection.category))
            if label is None or min(detection.box[2], detection.box[3]) < options.min_size:
                continue
            box = _padded_box(detection.box, options.padding, image.width, image.height)
            if box is None:
                num_empty += 1
                continue
            kept.append((detection.box[2] * detection.box[3], Crop(image_dir / image.file, box, label)))
        if options.crops == "largest" and kept:
            kept = [max(kept, key=lambda item: item[0])]
        crops.extend(crop for _, crop in kept)
    if num_empty:
        log.warning("%s: %d boxes are empty or outside their image; ignored", split, num_empty)
    counts = Counter(crop.label for crop in crops)
    missing = [name for name, label in label_of.items() if counts[label] == 0]
    if missing:
        raise ValueError(f"split {split}: no crops of class(es) {missing} (after min_size={options.min_size}, "
                         f"crops={options.crops}); every split must hold the same classes: drop them with "
                         "data.source.classes or relax min_size")  # fmt: skip
    return crops


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"COCO annotation file {path} not found")
    try:
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(content, dict):
        raise ValueError(f"{path}: expected a JSON object with images, annotations and categories")
    missing = [key for key in ("images", "annotations", "categories") if key not in content]
    if missing:
        raise ValueError(f"{path}: missing key(s) {missing} of a COCO detection file; found {sorted(content)}")
    return content


def _parse_coco(path: Path) -> DetectionSet:
    content = _json(path)
    try:
        names = {int(c["id"]): str(c["name"]) for c in sorted(content["categories"], key=lambda c: c["id"])}
        images = {int(i["id"]): (str(i["file_name"]), int(i["width"]), int(i["height"])) for i in content["images"]}
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: a category needs id and name, an image id, file_name, width and height "
                         f"({type(error).__name__}: {error})") from None  # fmt: skip
    detections: dict[int, list[Detection]] = defaultdict(list)
    for annotation in content["annotations"]:
        image_id, category_id, bbox = annotation.get("image_id"), annotation.get("category_id"), annotation.get("bbox")
        if image_id not in images or category_id not in names or not isinstance(bbox, list) or len(bbox) != 4:
            raise ValueError(f"{path}: annotation {annotation.get('id')} needs a known image_id, a known category_id "
                             f"and bbox [x, y, w, h]; got image_id={image_id}, category_id={category_id}, "
                             f"bbox={bbox}")  # fmt: skip
        if not annotation.get("iscrowd", 0):
            x, y, w, h = (float(value) for value in bbox)
            detections[image_id].append(Detection(names[category_id], (x, y, w, h)))
    return DetectionSet(
        tuple(names.values()),
        tuple(DetectionImage(file, width, height, tuple(detections[image_id]))
              for image_id, (file, width, height) in images.items()),
    )  # fmt: skip


@lru_cache(maxsize=4)
def _cached_coco(path: str, mtime_ns: int, size: int) -> DetectionSet:
    return _parse_coco(Path(path))


def read_coco(path: Path | str) -> DetectionSet:
    """The detections of a COCO JSON file (parsed once per file version: train's categories are read by
    every split). Crowd annotations are left out.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: naming `path`, for invalid JSON, missing keys or an annotation that refers to an
            unknown image or category or lacks a 4-number bbox.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"COCO annotation file {path} not found")
    stat = path.stat()
    return _cached_coco(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


def write_coco(
    path: Path | str, images: Sequence[dict[str, Any]], annotations: Sequence[dict[str, Any]], categories: Sequence[str]
) -> None:
    """Write a COCO detection file: `images` and `annotations` as given, `categories` numbered from 1."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    numbered = [{"id": index, "name": name} for index, name in enumerate(categories, start=1)]
    path.write_text(json.dumps({"images": list(images), "annotations": list(annotations), "categories": numbered}))


def load_fiftyone(dataset_name: str) -> Any:
    """The FiftyOne dataset `dataset_name`; ImportError saying what to install when FiftyOne is missing."""
    try:
        import fiftyone
    except ImportError:
        raise ImportError("data.source fiftyone_crops needs FiftyOne, which is not installed: pip install fiftyone "
                          "(pretrainlab's `fiftyone` extra)") from None  # fmt: skip
    return fiftyone.load_dataset(dataset_name)


def fiftyone_categories(dataset: Any, label_field: str) -> tuple[str, ...]:
    """The sorted labels of the `Detections` in `label_field` of a FiftyOne dataset."""
    return tuple(sorted(dataset.distinct(f"{label_field}.detections.label")))


def read_fiftyone(dataset_name: str, label_field: str, tag: str) -> DetectionSet:
    """The `Detections` in `label_field` of the samples tagged `tag` of the FiftyOne dataset
    `dataset_name` (relative boxes scaled to pixels); categories are the field's sorted labels."""
    dataset = load_fiftyone(dataset_name)
    view = dataset.match_tags(tag)
    view.compute_metadata()
    images = []
    for sample in view:
        width, height = sample.metadata.width, sample.metadata.height
        labels = sample[label_field]
        detections = tuple(
            Detection(d.label, (d.bounding_box[0] * width, d.bounding_box[1] * height,
                                d.bounding_box[2] * width, d.bounding_box[3] * height))
            for d in (labels.detections if labels is not None else [])
        )  # fmt: skip
        images.append(DetectionImage(sample.filepath, width, height, detections))
    return DetectionSet(fiftyone_categories(dataset, label_field), tuple(images))


class ObjectCropsDataset(SkippingDataset):
    """Classification dataset over `crops`: `(transform(crop), label)`, crop uint8 (h, w, channels).

    Args:
        crops: the samples (`select_crops`).
        classes: class names, index = label.
        transform: called on the uint8 (h, w, channels) crop; `None` returns it.
        channels, channel_policy, uint16_scaling, intensity_window: as for `read_image`.
        in_memory: decode every image once at construction and keep its crops; the crops of broken
            images are then dropped (and counted in `num_broken`), so `targets` matches what is returned.

    Attributes:
        classes; `targets`: label per sample; `crops`: the samples.
    """

    def __init__(
        self,
        crops: Sequence[Crop],
        classes: Sequence[str],
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
        if not crops:
            raise ValueError(f"no crops to make a dataset of (classes {list(classes)})")
        self.crops = list(crops)
        self.classes = list(classes)
        self.transform = transform
        self.read_options: dict[str, Any] = {
            "channels": channels, "channel_policy": channel_policy,
            "uint16_scaling": uint16_scaling, "intensity_window": intensity_window,
        }  # fmt: skip
        self.num_dropped = 0
        self.images: list[np.ndarray] | None = self._decode_all() if in_memory else None
        self.targets = [crop.label for crop in self.crops]
        self.share_broken_flags()

    def _decode_all(self) -> list[np.ndarray]:
        by_path: dict[Path, list[int]] = defaultdict(list)
        for index, crop in enumerate(self.crops):
            by_path[crop.path].append(index)
        decoded: dict[int, np.ndarray] = {}
        broken: list[str] = []
        for path, indices in by_path.items():
            try:
                image = read_image(path, **self.read_options)
            except ChannelMismatchError:
                raise
            except (BrokenSampleError, OSError, ValueError) as error:
                log.warning("dropping the %d crop(s) of broken %s: %s", len(indices), path, error)
                self.num_dropped += len(indices)
                broken.append(path.name)
                continue
            for index in indices:
                try:
                    decoded[index] = _cut(image, self.crops[index].box)
                except BrokenSampleError as error:
                    log.warning("dropping a crop of %s: %s", path, error)
                    self.num_dropped += 1
        if not decoded:
            raise ValueError(f"all {len(by_path)} images of the {len(self.crops)} crops are broken")
        self.crops = [self.crops[index] for index in sorted(decoded)]
        log.log(logging.WARNING if self.num_dropped else logging.INFO, "cut %d crops of %d images into memory (%d "
                "dropped, %d broken images%s)", len(decoded), len(by_path), self.num_dropped, len(broken),
                examples(broken))  # fmt: skip
        return [decoded[index] for index in sorted(decoded)]

    @property
    def num_broken(self) -> int:
        """Crops of broken images: dropped at load time (in_memory) plus skipped while iterating."""
        return self.num_dropped + len(self.broken_indices)

    def __len__(self) -> int:
        return len(self.crops)

    def describe(self, index: int) -> str:
        return f"{self.crops[index].path} box {self.crops[index].box}"

    def load(self, index: int) -> tuple[np.ndarray, int]:
        """(crop uint8 (h, w, channels), label) of sample `index`, before the transform."""
        crop = self.crops[index]
        if self.images is not None:
            return self.images[index], crop.label
        return _cut(read_image(crop.path, **self.read_options), crop.box), crop.label

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label = super().__getitem__(index)
        return (self.transform(image) if self.transform is not None else image), label


def _cut(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The (h, w, C) copy of `image` inside `box`, clipped to the decoded image (its file may differ from
    the annotated size); BrokenSampleError when nothing is left."""
    x0, y0, x1, y1 = box
    height, width = image.shape[:2]
    if min(x1, width) <= x0 or min(y1, height) <= y0:
        raise BrokenSampleError(f"box {box} lies outside the {width}x{height} image")
    crop = np.array(image[y0 : min(y1, height), x0 : min(x1, width)])  # a copy: the whole image is freed
    crop.flags.writeable = False  # samples are views when in memory: a transform must not modify them
    return crop


def _crops_dataset(
    detections: DetectionSet, image_dir: Path, classes: list[str], options: CropOptions, split: str, data: DataConfig,
    transform: Callable[[np.ndarray], Any] | None,
) -> ObjectCropsDataset:  # fmt: skip
    """The split's dataset, after checking it declares no class the class list lacks (with `classes` unset)."""
    if options.classes is None:
        extra = [name for name in crop_classes(detections.categories, options, split) if name not in classes]
        if extra:
            raise ValueError(f"split {split}: categories {extra} are not classes of the train split {classes}; every "
                             "split must hold the same classes: choose them with data.source.classes")  # fmt: skip
    crops = select_crops(detections.images, image_dir, classes, options, split)
    log.info("%s: %d crops of %d classes from %d images", split, len(crops), len(classes), len(detections.images))
    return ObjectCropsDataset(crops, classes, transform=transform, in_memory=data.in_memory, **data.read_options())


class CocoCropsSourceConfig(Component, CropOptions):
    """`data.source` for object crops of COCO detection files under `data.root` (module docstring).
    The defaults are the synthetic generator's detection set."""

    name: Literal["coco_crops"]
    train_json: str = Field("detection/annotations/instances_train.json", description="under data.root")
    val_json: str = Field("detection/annotations/instances_val.json", description="under data.root")
    image_dir: str = Field("detection/{split}", description=(
        "under data.root; file_name is relative to it; {split} = train | val (e.g. {split}2017)"))  # fmt: skip

    def json_path(self, data: DataConfig, split: Split) -> Path:
        return data.root / (self.train_json if split == "train" else self.val_json)

    def image_folder(self, data: DataConfig, split: Split) -> Path:
        return data.root / self.image_dir.replace("{split}", split)

    def check(self, data: DataConfig) -> None:
        """The synthetic generator writes the detection set when asked to, with every class in each split
        from `num_classes` images on."""
        synthetic = data.synthetic
        if synthetic is None:
            return
        if min(synthetic.num_detection_train, synthetic.num_detection_val) < synthetic.num_classes:
            raise ValueError(f"data.source coco_crops reads detection files: set data.synthetic.num_detection_train "
                             f"and num_detection_val to at least num_classes={synthetic.num_classes} for the generator "
                             "to write them with every class in each split (or data.synthetic: null for real data); "
                             f"got {synthetic.num_detection_train}, {synthetic.num_detection_val}")  # fmt: skip

    def paths(self, data: DataConfig, split: Split) -> list[Path]:
        return [self.json_path(data, split), self.image_folder(data, split)]

    def class_names(self, data: DataConfig) -> list[str]:
        source = str(self.json_path(data, "train"))
        if data.synthetic is not None:
            return crop_classes(data.synthetic.class_names, self, source)
        return crop_classes(read_coco(self.json_path(data, "train")).categories, self, source)

    def open(self, data: DataConfig, split: Split, transform: Callable[[np.ndarray], Any] | None = None
             ) -> ObjectCropsDataset:  # fmt: skip
        path = self.json_path(data, split)
        return _crops_dataset(read_coco(path), self.image_folder(data, split), self.class_names(data), self,
                              f"{split} ({path})", data, transform)  # fmt: skip


class FiftyOneCropsSourceConfig(Component, CropOptions):
    """`data.source` for object crops of a FiftyOne dataset's detections, split by sample tags
    (needs `pip install fiftyone`)."""

    name: Literal["fiftyone_crops"]
    dataset: str = Field(description="name of the FiftyOne dataset (fiftyone.load_dataset)")
    label_field: str = Field("ground_truth", description="the samples' Detections field")
    train_tag: str = "train"
    val_tag: str = "val"

    def check(self, data: DataConfig) -> None:
        """FiftyOne datasets are not generated: the synthetic generator does not apply."""
        if data.synthetic is not None:
            raise ValueError("data.source fiftyone_crops reads a FiftyOne dataset: set data.synthetic: null")

    def paths(self, data: DataConfig, split: Split) -> list[Path]:
        """None: the images are where the FiftyOne dataset's samples say."""
        return []

    def class_names(self, data: DataConfig) -> list[str]:
        categories = fiftyone_categories(load_fiftyone(self.dataset), self.label_field)
        return crop_classes(categories, self, f"FiftyOne dataset {self.dataset}")

    def open(self, data: DataConfig, split: Split, transform: Callable[[np.ndarray], Any] | None = None
             ) -> ObjectCropsDataset:  # fmt: skip
        tag = self.train_tag if split == "train" else self.val_tag
        detections = read_fiftyone(self.dataset, self.label_field, tag)
        return _crops_dataset(detections, Path("/"), self.class_names(data), self,
                              f"{split} (FiftyOne {self.dataset}, tag {tag})", data, transform)  # fmt: skip

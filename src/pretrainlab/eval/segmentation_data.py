"""Datasets and pipelines of a segmentation finetuning (`eval.seg`).

The dataset root defaults to `<data.root>/segmentation` (the synthetic set). An
ADE20k-layout root holding a `classes.json` (`{"classes": [...], "palette": [...],
"reduce_zero_label": bool}`, as `pretrainlab data synth` writes) uses its own class
list and palette; otherwise the layout's (ADE20k's 150 classes, Cityscapes' 19).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from pretrainlab.data.formats.segmentation_datasets import (
    LAYOUTS,
    SegmentationDataset,
    SegmentationLayout,
    find_ade20k_pairs,
)
from pretrainlab.data.transforms.seg_pipeline import SegTrainPipeline, SegValPipeline

if TYPE_CHECKING:
    from pretrainlab.config.schema import Config
    from pretrainlab.methods.segmentation import SegFinetuneConfig


def segmentation_root(config: Config) -> Path:
    return config.eval.seg.root if config.eval.seg.root is not None else config.data.root / "segmentation"


def dataset_layout(root: Path, layout: str) -> SegmentationLayout:
    """The layout's classes, or the ones of `root/classes.json` for an ADE20k-layout root that has it."""
    classes_file = root / "classes.json"
    if layout != "ade20k" or not classes_file.is_file():
        return LAYOUTS[layout]
    try:
        meta = json.loads(classes_file.read_text())
        classes, palette = tuple(meta["classes"]), tuple(tuple(colour) for colour in meta["palette"])
    except (ValueError, KeyError, TypeError) as error:  # cut short or hand-edited: JSONDecodeError is a ValueError
        raise ValueError(f"{classes_file}: expected a JSON object with 'classes' [names] and 'palette' [[r, g, b], "
                         f"...] ({type(error).__name__}: {error})") from None  # fmt: skip
    if len(palette) != len(classes):
        raise ValueError(f"{classes_file}: {len(classes)} classes but {len(palette)} palette colours")
    return SegmentationLayout(root.name, classes, palette, bool(meta.get("reduce_zero_label", True)), find_ade20k_pairs)


def mean_std_255(config: Config) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """`data.mean` / `data.std` (fractions of 1, RGB) on the 0-255 scale of the segmentation pipelines."""
    mean, std = config.data.mean_std
    return tuple(255.0 * m for m in mean), tuple(255.0 * s for s in std)


def train_pipeline(config: Config) -> SegTrainPipeline:
    """MMSeg's train transforms; with `augment: false` only the resize to `scale` (and a crop when larger).

    Its uint8 samples are normalised by the collate (`segmentation.train_collate`).
    """
    seg: SegFinetuneConfig = config.eval.seg
    if not seg.augment:
        return SegTrainPipeline(
            crop_size=seg.crop_size, scale=seg.scale, ratio_range=(1.0, 1.0), cat_max_ratio=1.0,
            flip_p=0.0, photometric=False,
        )  # fmt: skip
    return SegTrainPipeline(
        crop_size=seg.crop_size, scale=seg.scale, ratio_range=seg.ratio_range, cat_max_ratio=seg.cat_max_ratio,
    )  # fmt: skip


def val_pipeline(config: Config) -> SegValPipeline:
    mean, std = mean_std_255(config)
    return SegValPipeline(scale=config.eval.seg.scale, size_divisor=config.eval.seg.size_divisor, mean=mean, std=std)


def build_seg_datasets(config: Config) -> tuple[SegmentationDataset, SegmentationDataset]:
    """(train, val) datasets with the train / validation pipelines of `config.eval.seg`."""
    root = segmentation_root(config)
    layout = dataset_layout(root, config.eval.seg.layout)
    train = SegmentationDataset(root, layout, "train", transform=train_pipeline(config))
    val = SegmentationDataset(root, layout, "val", transform=val_pipeline(config), replaces_broken=False)
    return train, val

"""Semantic-segmentation finetuning as a method on the engine (W5, MMSegmentation semantics).

`SegFinetune` trains a `Segmentor` (backbone + segmentation head): the head only in mode
`frozen`, everything in mode `full` (minus `freeze` patterns), as decided by
`engine/freeze.py`; the optimizer sees only those parameters, with lr multipliers per
pattern and no decay on norms / biases / position embeddings; the lr follows MMSeg's poly
decay by iteration. The loss is the head's `loss(maps, labels)`: `segmentation_cross_entropy`
at the padded crop size with ignore index 255 and the configured reduction, or the head's own
objective (Mask2Former).

Data: the MMSeg train pipeline (random resize, cat-max crop, flip, photometric) or, with
`augment: false`, the validation resize. Fast path: with a frozen backbone and
`augment: false` every training image is the same tensor at every iteration, so the maps
the head reads are computed once per image and batches of them are drawn
(`cached_maps_train_data`); maps the head does not read are empty (B, D_i, 0, 0)
tensors. The result equals recomputing the maps (the frozen backbone runs in eval mode)
except for the order of floating-point work.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from pretrainlab.config.component import PositiveInt, Strict
from pretrainlab.data.formats.segmentation_datasets import SegmentationDataset
from pretrainlab.data.train_data import IterationSampler, TrainData
from pretrainlab.engine.freeze import is_frozen
from pretrainlab.engine.optim import OptimConfig
from pretrainlab.engine.schedules import Schedules, StepValues, poly_schedule
from pretrainlab.eval.segmentation_model import Segmentor
from pretrainlab.methods.base import Method
from pretrainlab.models.backbones.base import Backbone
from pretrainlab.models.heads.seg_base import SEG_HEADS
from pretrainlab.precision import autocast

log = logging.getLogger(__name__)


class SegFinetuneConfig(Strict):
    """Semantic-segmentation finetuning with MMSegmentation semantics (W5).

    Train pipeline: random resize of `scale` × `ratio_range` → random crop `crop_size`
    (`cat_max_ratio`) → flip → photometric distortion, or with `augment: false` the
    validation resize only. With `mode: frozen` and `augment: false` the backbone maps of
    every training image are computed once and the head trains on them (same result as
    recomputing them, much faster).
    """

    head: SEG_HEADS.config_type("seg_linear") = Field(default_factory=SEG_HEADS.default_factory("seg_linear"))  # type: ignore[valid-type]
    mode: Literal["frozen", "full"] = Field("frozen", description="frozen: only the head trains; full: everything")
    freeze: list[str] = Field(default_factory=list, description="parameter patterns frozen in any mode")
    root: Path | None = Field(None, description="dataset root; null = <data.root>/segmentation")
    layout: Literal["ade20k", "cityscapes"] = "ade20k"
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0.0)
    min_lr: float = Field(0.0, ge=0.0)
    poly_power: float = Field(0.9, ge=0.0)
    warmup_iters: int = Field(0, ge=0)
    lr_multipliers: dict[str, float] = Field(
        default_factory=dict, description="lr factor per parameter pattern, e.g. {head: 10.0}; longest match wins"
    )
    weight_decay: float = Field(0.01, ge=0.0, description="not applied to norms, biases, position embeddings")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum")
    iterations: int = Field(2000, ge=1)
    batch_size: int = Field(16, ge=1)
    crop_size: int = Field(512, ge=1)
    scale: tuple[PositiveInt, PositiveInt] = (2048, 512)
    ratio_range: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = Field(0.75, gt=0.0, le=1.0)
    augment: bool = Field(True, description="random resize / crop / flip / photometric; false = val resize only")
    avg_non_ignore: bool = Field(False, description="loss mean over non-ignored pixels (true) or all pixels (MMSeg)")
    inference: Literal["whole", "slide"] = "whole"
    slide_crop: int = Field(512, ge=1)
    slide_stride: int = Field(341, ge=1)
    size_divisor: int | None = Field(None, ge=1, description="pad validation images to a multiple (14 for ViT/14)")
    eval_batch_size: int = Field(16, ge=1)
    num_examples: int = Field(4, ge=0, description="image / label / prediction triptychs in plots/seg_examples.png")

    def optim(self) -> OptimConfig:
        """The engine's optimizer settings for this finetuning (constant weight decay, no clipping)."""
        return OptimConfig(name=self.optimizer, lr=self.lr, min_lr=self.min_lr, warmup_epochs=0.0,
                           weight_decay=self.weight_decay, weight_decay_end=self.weight_decay, momentum=self.momentum,
                           clip_grad=None, scale_lr_with_batch=False,
                           lr_multipliers={f"segmentor.{k}": v for k, v in self.lr_multipliers.items()})  # fmt: skip

    def schedules(self, steps_per_epoch: int, world_size: int) -> Schedules:
        """MMSeg's poly lr with linear warm-up, by iteration; the whole finetuning is one epoch."""
        lr = poly_schedule(self.lr, self.min_lr, self.iterations, power=self.poly_power, warmup_iters=self.warmup_iters)
        return Schedules(steps_per_epoch, lr, np.full(self.iterations, self.weight_decay))

    @model_validator(mode="after")
    def _check(self) -> SegFinetuneConfig:
        if self.slide_stride > self.slide_crop:
            raise ValueError(f"slide_stride={self.slide_stride} exceeds slide_crop={self.slide_crop} (gaps)")
        if self.ratio_range[0] > self.ratio_range[1] or self.ratio_range[0] <= 0:
            raise ValueError(f"ratio_range must satisfy 0 < min <= max, got {self.ratio_range}")
        if self.warmup_iters >= self.iterations:
            raise ValueError(f"warmup_iters={self.warmup_iters} must be below iterations={self.iterations}")
        return self


class SegFinetune(Method):
    """Trains `segmentor` on batches of (images (B, C, H, W), labels (B, H, W)), or of
    (cached maps [(B, D_i, H_i, W_i)], labels) when `uses_cached_maps`."""

    def __init__(self, segmentor: Segmentor, *, avg_non_ignore: bool, uses_cached_maps: bool) -> None:
        super().__init__()
        self.segmentor = segmentor
        self.avg_non_ignore = avg_non_ignore
        self.uses_cached_maps = uses_cached_maps

    def training_step(self, batch: tuple[Tensor | list[Tensor], Tensor], step: StepValues) -> dict[str, Tensor]:
        inputs, labels = batch
        maps = inputs if self.uses_cached_maps else self.segmentor.backbone_maps(inputs)
        return self.segmentor.head.loss(maps, labels, avg_non_ignore=self.avg_non_ignore)

    def eval_backbone(self) -> Backbone:
        return self.segmentor.backbone


class CachedMaps(Dataset):
    """Index i -> ([maps_j[i] for every map j], labels[i])."""

    def __init__(self, maps: list[Tensor], labels: Tensor) -> None:
        self.maps, self.labels = maps, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[list[Tensor], Tensor]:
        return [m[index] for m in self.maps], self.labels[index]


def collate_cached_maps(samples: list[tuple[list[Tensor], Tensor]]) -> tuple[list[Tensor], Tensor]:
    maps = [torch.stack([sample[0][j] for sample in samples]) for j in range(len(samples[0][0]))]
    return maps, torch.stack([sample[1] for sample in samples])


@torch.no_grad()
def cache_backbone_maps(
    segmentor: Segmentor, dataset: SegmentationDataset, collate, batch_size: int, precision: str
) -> tuple[list[Tensor], Tensor]:
    """Maps the head reads, for every training sample, padded to the crop size like a training batch.

    Returns:
        maps [(N, D_i, H_i, W_i)] (empty (N, D_i, 0, 0) for maps the head does not read) and
        labels (N, crop, crop) int64.
    """
    assert is_frozen(segmentor.backbone), "caching maps needs a frozen backbone"
    device = next(segmentor.parameters()).device
    read = set(segmentor.head.map_indices)
    chunks: list[list[Tensor]] = []
    labels = []
    segmentor.train()  # the frozen backbone stays in eval mode
    with autocast(precision, device):
        for images, batch_labels in DataLoader(dataset, batch_size=batch_size, collate_fn=collate):
            maps = segmentor.backbone_maps(images.to(device))
            chunks.append([m if i in read else m[:, :, :0, :0] for i, m in enumerate(maps)])
            labels.append(batch_labels)
    return [torch.cat(level) for level in zip(*chunks)], torch.cat(labels)


def seg_train_data(
    segmentor: Segmentor, dataset: SegmentationDataset, seg: SegFinetuneConfig, collate, *, seed: int,
    precision: str, num_workers: int = 0,
) -> tuple[TrainData, bool]:
    """The finetuning's training data and whether it is cached backbone maps (see the module docstring)."""
    batch_size = min(seg.batch_size, len(dataset))
    if batch_size < seg.batch_size:
        log.warning("eval.seg.batch_size=%d exceeds the %d training images; using %d", seg.batch_size,
                    len(dataset), batch_size)  # fmt: skip
    if is_frozen(segmentor.backbone) and not seg.augment:
        maps, labels = cache_backbone_maps(segmentor, dataset, collate, seg.eval_batch_size, precision)
        sampler = IterationSampler(len(labels), batch_size, seg.iterations, seed, fresh_permutation_per_batch=True)
        return TrainData(CachedMaps(maps, labels), sampler, collate_cached_maps, batch_size), True
    sampler = IterationSampler(len(dataset), batch_size, seg.iterations, seed)
    return TrainData(dataset, sampler, collate, batch_size, num_workers, description=str(Path(dataset.root))), False

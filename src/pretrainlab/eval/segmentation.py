"""Semantic-segmentation finetuning and evaluation of a backbone (W5, MMSegmentation semantics).

    finetune_segmentation(backbone, config)   trains a head (and the backbone in `full` mode)
    evaluate_segmentor(segmentor, val, ...)   whole / slide inference, SegmentationMetric

What trains is decided by `engine/freeze.py` (mode `frozen`: `head.*`; `full`: all, minus
`freeze` patterns); the optimizer (`engine/optim.py`) sees only those parameters, with lr
multipliers per pattern and no decay on norms / biases / position embeddings; the lr
follows MMSeg's poly decay (`engine/schedules.py`). The loss is `segmentation_cross_entropy`
at the padded crop size with ignore index 255 and the configured reduction.

Fast path: with a frozen backbone and `augment: false` every training image is the same
tensor at every iteration, so the maps the head reads are computed once per image and the
head trains on them (`cache_backbone_maps`); maps the head does not read are replaced by
empty (B, D_i, 0, 0) tensors. The result equals recomputing the maps (the frozen backbone
runs in eval mode) except for the order of floating-point work. With augmentation, the
frozen backbone runs every step under `no_grad`.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from pretrainlab.config.schema import Config, OptimConfig
from pretrainlab.data.formats.segmentation_datasets import SegmentationDataset
from pretrainlab.data.transforms.seg_collate import (
    IGNORE_INDEX,
    collate_segmentation,
    pad_batch,
)
from pretrainlab.engine.freeze import TrainableSet, is_frozen, set_trainable_for_mode
from pretrainlab.engine.optim import build_optimizer, set_lr_and_weight_decay
from pretrainlab.engine.schedules import poly_schedule
from pretrainlab.eval.metrics import SegmentationMetric
from pretrainlab.eval.segmentation_data import mean_std_255
from pretrainlab.eval.segmentation_model import Segmentor
from pretrainlab.eval.slide import resize_logits_to, slide_inference, whole_inference
from pretrainlab.losses.cross_entropy import segmentation_cross_entropy
from pretrainlab.models.backbones.base import Backbone
from pretrainlab.models.heads.seg_registry import build_seg_head

log = logging.getLogger(__name__)
LOG_EVERY = 50


@dataclass
class TrainLog:
    """What a finetuning did: iterations, seconds, losses every `LOG_EVERY` iterations, trainable set."""

    iterations: int
    seconds: float
    cached_maps: bool
    trainable: TrainableSet
    losses: list[tuple[int, float]] = field(default_factory=list)


def autocast(precision: str, device: torch.device) -> torch.autocast:
    """bf16 autocast when `precision` is bf16-mixed (CPU or GPU), a disabled context otherwise."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")


def build_segmentor(backbone: Backbone, config: Config, num_classes: int) -> Segmentor:
    """Backbone + the head `eval.seg.head` names (initialised with the seed `config.seed`)."""
    torch.manual_seed(config.seed)
    head = build_seg_head(config.eval.seg.head, backbone.out_channels, backbone.strides, num_classes)
    return Segmentor(backbone, head)


def cache_backbone_maps(segmentor: Segmentor, dataset: SegmentationDataset, config: Config) -> tuple[list[Tensor], Tensor]:
    """Maps the head reads, for every training sample, padded to the crop size like a training batch.

    Returns:
        maps [(N, D_i, H_i, W_i)] (empty (N, D_i, 0, 0) for maps the head does not read) and
        labels (N, crop, crop) int64.
    """
    assert is_frozen(segmentor.backbone), "caching maps needs a frozen backbone"
    device = next(segmentor.parameters()).device
    seg, precision = config.eval.seg, config.engine.precision
    loader = DataLoader(dataset, batch_size=seg.eval_batch_size, collate_fn=train_collate(config))
    read = set(segmentor.head.map_indices)
    chunks: list[list[Tensor]] = []
    labels = []
    segmentor.train()  # the frozen backbone stays in eval mode
    with autocast(precision, device):
        for images, batch_labels in loader:
            maps = segmentor.backbone_maps(images.to(device))
            chunks.append([m if i in read else m[:, :, :0, :0] for i, m in enumerate(maps)])
            labels.append(batch_labels)
    return [torch.cat(level) for level in zip(*chunks)], torch.cat(labels)


def train_collate(config: Config) -> functools.partial[tuple[Tensor, Tensor]]:
    """Normalise (`data.mean` / `data.std`) and pad training samples to batches of the crop size."""
    seg = config.eval.seg
    mean, std = mean_std_255(config)
    return functools.partial(
        collate_segmentation, mean=mean, std=std, size_divisor=seg.size_divisor, size=(seg.crop_size, seg.crop_size)
    )


def _batches(
    segmentor: Segmentor, dataset: SegmentationDataset, config: Config, generator: torch.Generator
) -> tuple[Iterator[tuple[list[Tensor], Tensor]], bool]:
    """An endless stream of (maps, labels) training batches, and whether maps are cached."""
    seg, precision = config.eval.seg, config.engine.precision
    device = next(segmentor.parameters()).device
    batch_size = min(seg.batch_size, len(dataset))
    if batch_size < seg.batch_size:
        log.warning("eval.seg.batch_size=%d exceeds the %d training images; using %d", seg.batch_size,
                    len(dataset), batch_size)  # fmt: skip
    if is_frozen(segmentor.backbone) and not seg.augment:
        maps, labels = cache_backbone_maps(segmentor, dataset, config)

        def cached() -> Iterator[tuple[list[Tensor], Tensor]]:
            while True:
                index = torch.randperm(len(labels), generator=generator)[:batch_size]
                yield [m[index] for m in maps], labels[index].to(device)

        return cached(), True

    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=True, drop_last=True, generator=generator,
        collate_fn=train_collate(config),
    )  # fmt: skip

    def live() -> Iterator[tuple[list[Tensor], Tensor]]:
        while True:
            for images, labels in loader:
                with autocast(precision, device):
                    maps = segmentor.backbone_maps(images.to(device))
                yield maps, labels.to(device)

    return live(), False


def finetune(segmentor: Segmentor, dataset: SegmentationDataset, config: Config) -> TrainLog:
    """Train `segmentor` on `dataset` for `eval.seg.iterations` iterations (in place)."""
    seg, precision = config.eval.seg, config.engine.precision
    trainable = set_trainable_for_mode(segmentor, seg.mode, seg.freeze)
    optimizer = build_optimizer(
        segmentor, OptimConfig(name=seg.optimizer, lr=seg.lr, momentum=seg.momentum), seg.lr_multipliers
    )
    lrs = poly_schedule(seg.lr, seg.min_lr, seg.iterations, power=seg.poly_power, warmup_iters=seg.warmup_iters)
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)  # the dataset's augmentation rng follows torch.initial_seed()
    started = time.perf_counter()
    batches, cached = _batches(segmentor, dataset, config, generator)
    segmentor.train()
    device = next(segmentor.parameters()).device
    log_ = TrainLog(seg.iterations, 0.0, cached, trainable)
    for iteration in range(seg.iterations):
        maps, labels = next(batches)
        set_lr_and_weight_decay(optimizer, float(lrs[iteration]), seg.weight_decay)
        with autocast(precision, device):
            logits = segmentor.decode(maps, tuple(labels.shape[-2:]))  # (B, K, crop, crop)
        loss = segmentation_cross_entropy(logits.float(), labels, avg_non_ignore=seg.avg_non_ignore)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if iteration % LOG_EVERY == 0 or iteration == seg.iterations - 1:
            log_.losses.append((iteration, loss.item()))
            log.debug("seg iteration %d loss %.4f lr %.2e", iteration, log_.losses[-1][1], lrs[iteration])
    log_.seconds = time.perf_counter() - started
    log.info("finetuned %s for %d iterations in %.1f s (cached maps: %s)", seg.head.name, seg.iterations,
             log_.seconds, cached)  # fmt: skip
    return log_


def _val_collate(samples: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, list[Tensor], list[tuple[int, int]]]:
    """Validation batch: images padded to a common size, labels at their original sizes, unpadded sizes."""
    images, _ = pad_batch([image for image, _ in samples])
    return images, [label for _, label in samples], [tuple(image.shape[-2:]) for image, _ in samples]


@torch.no_grad()
def evaluate_segmentor(
    segmentor: Segmentor,
    dataset: SegmentationDataset,
    config: Config,
    *,
    num_examples: int = 0,
) -> tuple[SegmentationMetric, list[np.ndarray]]:
    """Whole / slide inference over `dataset` (SegValPipeline samples) -> accumulated metric and the
    first `num_examples` predictions ((H, W) int64 at the label size)."""
    seg, precision = config.eval.seg, config.engine.precision
    segmentor.eval()
    device = next(segmentor.parameters()).device
    metric = SegmentationMetric(dataset.num_classes, IGNORE_INDEX)
    examples: list[np.ndarray] = []
    loader = DataLoader(dataset, batch_size=seg.eval_batch_size, collate_fn=_val_collate)
    for images, labels, sizes in loader:
        with autocast(precision, device):
            if seg.inference == "slide":
                crop, stride = (seg.slide_crop,) * 2, (seg.slide_stride,) * 2
                logits = slide_inference(segmentor, images.to(device), dataset.num_classes, crop, stride)
            else:
                logits = whole_inference(segmentor, images.to(device), dataset.num_classes)
        for logit, label, (height, width) in zip(logits.float(), labels, sizes):
            resized = resize_logits_to(logit[None, :, :height, :width], tuple(label.shape))  # (1, K, H, W)
            prediction = resized[0].argmax(0).cpu()  # (H, W)
            metric.update(prediction, label)
            if len(examples) < num_examples:
                examples.append(prediction.numpy())
    return metric, examples


def finetune_segmentation(backbone: Backbone, config: Config, train: SegmentationDataset) -> tuple[Segmentor, TrainLog]:
    """A segmentor around `backbone` (modified in place in `full` mode), finetuned on `train`."""
    segmentor = build_segmentor(backbone, config, train.num_classes)
    return segmentor, finetune(segmentor, train, config)

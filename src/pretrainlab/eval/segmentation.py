"""Semantic-segmentation finetuning and evaluation of a backbone (W5, MMSegmentation semantics).

    finetune_segmentation(backbone, config, train, out_dir)   the `SegFinetune` method on the engine
    evaluate_segmentor(segmentor, val, ...)                    whole / slide inference, SegmentationMetric
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from pretrainlab.data.formats.segmentation_datasets import SegmentationDataset
from pretrainlab.data.transforms.seg_collate import (
    IGNORE_INDEX,
    collate_segmentation,
    pad_batch,
)
from pretrainlab.engine.freeze import TrainableSet, set_trainable_for_mode
from pretrainlab.engine.trainer import fit
from pretrainlab.eval.metrics import SegmentationMetric
from pretrainlab.eval.segmentation_data import mean_std_255
from pretrainlab.eval.segmentation_model import Segmentor
from pretrainlab.eval.slide import resize_logits_to, slide_inference, whole_inference
from pretrainlab.methods.segmentation import SegFinetune, seg_train_data
from pretrainlab.models.backbones.base import Backbone
from pretrainlab.models.heads.seg_base import build_seg_head
from pretrainlab.precision import autocast
from pretrainlab.run_dir import read_jsonl

if TYPE_CHECKING:
    from pretrainlab.config.schema import Config

log = logging.getLogger(__name__)


@dataclass
class TrainLog:
    """What a finetuning did: iterations, seconds (with data preparation), seconds per training step (the
    engine's fit over the iterations), parameters of the head and trainable ones, losses (iteration, value)
    as logged, trainable set."""

    iterations: int
    seconds: float
    step_seconds: float
    head_params: int
    trainable_params: int
    cached_maps: bool
    trainable: TrainableSet
    losses: list[tuple[int, float]] = field(default_factory=list)


def build_segmentor(backbone: Backbone, config: Config, num_classes: int) -> Segmentor:
    """Backbone + the head `eval.seg.head` names (initialised with the seed `config.seed`), sized
    by the backbone's `decoder_width` where the head config leaves its width unset."""
    torch.manual_seed(config.seed)
    decoder_width = getattr(backbone, "decoder_width", None)  # MiT sets it; None = the head's own default
    head = build_seg_head(
        config.eval.seg.head, backbone.out_channels, backbone.strides, num_classes, decoder_width=decoder_width
    )
    return Segmentor(backbone, head)


def train_collate(config: Config) -> functools.partial[tuple[Tensor, Tensor]]:
    """Normalise (`data.mean` / `data.std`) and pad training samples to batches of the crop size."""
    seg = config.eval.seg
    mean, std = mean_std_255(config)
    return functools.partial(
        collate_segmentation, mean=mean, std=std, size_divisor=seg.size_divisor, size=(seg.crop_size, seg.crop_size)
    )


def finetune_segmentation(
    backbone: Backbone, config: Config, train: SegmentationDataset, out_dir: Path, name: str
) -> tuple[Segmentor, TrainLog]:
    """A segmentor around `backbone` (modified in place in `full` mode), finetuned on `train` by the
    engine for `eval.seg.iterations` iterations; metrics go to `<out_dir>/metrics_<name>.jsonl`."""
    seg = config.eval.seg
    segmentor = build_segmentor(backbone, config, train.num_classes)
    trainable = set_trainable_for_mode(segmentor, seg.mode, seg.freeze)
    torch.manual_seed(config.seed)  # the dataset's augmentation rng follows torch.initial_seed()
    started = time.perf_counter()
    data, cached = seg_train_data(segmentor, train, seg, train_collate(config), seed=config.seed,
                                  precision=config.engine.precision, num_workers=config.data.num_workers)  # fmt: skip
    method = SegFinetune(segmentor, avg_non_ignore=seg.avg_non_ignore, uses_cached_maps=cached)
    metrics_path = out_dir / f"metrics_{name}.jsonl"
    metrics_path.unlink(missing_ok=True)
    fit_started = time.perf_counter()
    fit(method, data, optim=seg.optim(), make_schedules=seg.schedules, engine=config.engine, max_epochs=1,
        metrics_path=metrics_path, logs_dir=out_dir / "logs" / name, checkpoint=None, channels_last=False)  # fmt: skip
    step_seconds = (time.perf_counter() - fit_started) / seg.iterations
    seconds = time.perf_counter() - started
    head_params = sum(p.numel() for p in segmentor.head.parameters())
    trainable_params = sum(p.numel() for p in segmentor.parameters() if p.requires_grad)
    # `objective` is the summed loss: the head's one `loss`, or its several `loss_*` terms (Mask2Former)
    losses = [(int(m["step"]), float(m["train/objective"])) for m in read_jsonl(metrics_path) if "train/objective" in m]
    log.info("finetuned %s for %d iterations in %.1f s (cached maps: %s)", seg.head.name, seg.iterations, seconds,
             cached)  # fmt: skip
    return segmentor, TrainLog(seg.iterations, seconds, step_seconds, head_params, trainable_params, cached, trainable,
                               losses)  # fmt: skip


def _val_collate(
    samples: list[tuple[Tensor, Tensor] | None],
) -> tuple[Tensor, list[Tensor], list[tuple[int, int]]] | None:
    """Validation batch: images padded to a common size, labels at their original sizes, unpadded sizes;
    broken samples (None) left out, None when all are."""
    samples = [sample for sample in samples if sample is not None]
    if not samples:
        return None
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
    for batch in loader:
        if batch is None:  # every scene of the batch is broken
            continue
        images, labels, sizes = batch
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

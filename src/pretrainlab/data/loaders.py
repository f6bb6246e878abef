"""Training data of the view-based methods and loaders for feature evaluation, reproducible across resume.

Both read the classification dataset `data.source` names (`DataConfig.dataset`): image folders,
CIFAR batches or object crops of detection files.

Augmentations are seeded per (run seed, epoch, sample index), and the shuffle order
per (run seed, epoch) (`data/train_data.py`), so an interrupted run that resumes at an
epoch boundary sees exactly the batches the uninterrupted run would have seen, with any
number of workers or processes.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from pretrainlab.data.synthetic import synthetic_is_complete, write_synthetic_dataset
from pretrainlab.data.train_data import EpochSampler, TrainData
from pretrainlab.data.transforms.views import EvalView

if TYPE_CHECKING:
    from pretrainlab.config.schema import Config

log = logging.getLogger(__name__)


class SeededViewsDataset(Dataset):
    """(epoch, index) -> (list of augmented views, label), with RNGs seeded per sample.

    `images` yields (image uint8 (H, W, C), label) pairs, e.g. `DataConfig.dataset("train")`.
    """

    def __init__(self, images: Dataset, make_views: Callable[[np.ndarray], Any], seed: int) -> None:
        self.images = images
        self.make_views = make_views
        self.seed = seed

    def __len__(self) -> int:
        return len(self.images)  # type: ignore[arg-type]  # every source's dataset is sized

    def __getitem__(self, key: tuple[int, int]) -> tuple[list[Tensor], int]:
        epoch, index = key
        random.seed(hash((self.seed, epoch, index)))  # the views draw from Python's `random`
        image, label = self.images[index]
        return list(self.make_views(image)), label


def ensure_dataset(config: Config) -> None:
    """Generate the synthetic dataset at `data.root` when configured and missing; else check that the
    files and folders `data.source` reads exist."""
    data = config.data
    if data.synthetic is not None:
        if not synthetic_is_complete(data.root, **data.synthetic.model_dump()):
            log.info("generating synthetic dataset at %s", data.root)
            write_synthetic_dataset(data.root, **data.synthetic.model_dump())
        return
    for split in ("train", "val"):
        for path in data.data_source.paths(data, split):
            if not path.exists():
                raise FileNotFoundError(f"data.root={data.root}: {split} data {path} (data.source "
                                        f"{data.data_source.name}) not found")  # fmt: skip


def dataset_num_classes(config: Config) -> int:
    """Classes of the training set (`data.source`'s class names; synthetic data: known before it is written)."""
    return len(config.data.class_names())


def views_train_data(config: Config, make_views: Callable[[np.ndarray], Any]) -> TrainData:
    """The training split of `data.source` as (views, label) samples, augmented by `make_views`."""
    data = config.data
    dataset = SeededViewsDataset(data.dataset("train"), make_views, config.seed)
    return TrainData(dataset, EpochSampler(len(dataset), config.seed), collate_views, data.batch_size,
                     data.num_workers, description=data.describe("train"))  # fmt: skip


def collate_views(samples: list[tuple[list[Tensor], int]]) -> tuple[list[Tensor], Tensor]:
    """[(views, label)] -> ([(B, C, H_v, W_v) per view], labels (B,))."""
    num_views = len(samples[0][0])
    views = [torch.stack([s[0][v] for s in samples]) for v in range(num_views)]
    labels = torch.tensor([s[1] for s in samples])
    return views, labels


def build_eval_loaders(config: Config) -> tuple[DataLoader, DataLoader]:
    """Train (bank) and val loaders of un-augmented images for feature evaluation."""
    data = config.data
    mean, std = data.mean_std
    view = EvalView(size=data.image_size, mean=mean, std=std)
    train, val = (data.dataset(split, transform=view) for split in ("train", "val"))
    return (DataLoader(train, batch_size=data.eval_batch_size, num_workers=data.num_workers),
            DataLoader(val, batch_size=data.eval_batch_size, num_workers=data.num_workers))  # fmt: skip

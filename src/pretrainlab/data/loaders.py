"""DataLoaders for pretraining and feature evaluation, reproducible across resume.

Augmentations are seeded per (run seed, epoch, sample index), and the shuffle order
per (run seed, epoch), so an interrupted run that resumes at an epoch boundary sees
exactly the batches the uninterrupted run would have seen, with any number of workers.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from pretrainlab.config.schema import Config, DINOConfig, SimCLRConfig, SupervisedConfig
from pretrainlab.data.formats.imagefolder import ImageFolderDataset, find_classes
from pretrainlab.data.synthetic import synthetic_is_complete, write_synthetic_dataset
from pretrainlab.data.transforms.views import EvalView, MultiCropViews, TwoViews

log = logging.getLogger(__name__)


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields (epoch, index) pairs; the permutation depends only on (seed, epoch).

    Lightning calls `set_epoch` at the start of every epoch.
    """

    def __init__(self, num_samples: int, seed: int, shuffle: bool = True) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        return iter((self.epoch, index) for index in order)


class SeededViewsDataset(Dataset):
    """(epoch, index) -> (list of augmented views, label), with RNGs seeded per sample."""

    def __init__(self, images: ImageFolderDataset, make_views: Callable[[np.ndarray], Any], seed: int) -> None:
        self.images = images
        self.make_views = make_views
        self.seed = seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> tuple[list[Tensor], int]:
        epoch, index = key
        random.seed(hash((self.seed, epoch, index)))  # the views draw from Python's `random`
        image, label = self.images[index]
        return list(self.make_views(image)), label


def ensure_dataset(config: Config) -> None:
    """Generate the synthetic dataset at `data.root` when configured and missing; else check it exists."""
    data = config.data
    if data.synthetic is not None:
        if not synthetic_is_complete(data.root, **data.synthetic.model_dump()):
            log.info("generating synthetic dataset at %s", data.root)
            write_synthetic_dataset(data.root, **data.synthetic.model_dump())
        return
    for sub in (data.train_dir, data.val_dir):
        if not (data.root / sub).is_dir():
            raise FileNotFoundError(f"data.root={data.root}: folder '{sub}' not found")


def make_views_transform(config: Config) -> Callable[[np.ndarray], Any]:
    method, data = config.method, config.data
    if isinstance(method, DINOConfig):
        crops = method.crops
        return MultiCropViews(**crops.model_dump(), mean=data.mean, std=data.std)
    if isinstance(method, SimCLRConfig):
        return TwoViews(**method.views.model_dump(), mean=data.mean, std=data.std)
    if isinstance(method, SupervisedConfig):  # one labelled view: a single DINO global crop
        view = method.view
        return MultiCropViews(
            num_global=1,
            num_local=0,
            global_size=view.size,
            global_scale=view.scale,
            brightness=view.brightness,
            contrast=view.contrast,
            saturation=view.saturation,
            hue=view.hue,
            color_jitter_p=view.color_jitter_p,
            grayscale_p=view.grayscale_p,
            global_blur_p=(view.blur_p, view.blur_p),
            solarize_p=0.0,
            flip_p=view.flip_p,
            mean=data.mean,
            std=data.std,
        )
    raise ValueError(f"no views for method '{method.name}'")


def dataset_num_classes(config: Config) -> int:
    """Classes of the training set: `data.synthetic.num_classes`, else the class folders of `data.train_dir`."""
    data = config.data
    if data.synthetic is not None:
        return data.synthetic.num_classes
    train_dir = data.root / data.train_dir
    if not train_dir.is_dir():
        raise FileNotFoundError(f"data.root={data.root}: folder '{data.train_dir}' not found")
    return len(find_classes(train_dir))


def build_pretrain_loader(config: Config) -> DataLoader:
    """Batches ([(B, C, H_v, W_v) per view], labels (B,)) of the training set, augmented by the method's views."""
    data = config.data
    images = ImageFolderDataset(data.root / data.train_dir, in_memory=data.in_memory)
    dataset = SeededViewsDataset(images, make_views_transform(config), config.seed)
    return DataLoader(
        dataset,
        batch_size=data.batch_size,
        sampler=EpochSampler(len(dataset), config.seed),
        num_workers=data.num_workers,
        collate_fn=collate_views,
        drop_last=True,
        persistent_workers=data.num_workers > 0,
    )


def collate_views(samples: list[tuple[list[Tensor], int]]) -> tuple[list[Tensor], Tensor]:
    """[(views, label)] -> ([(B, C, H_v, W_v) per view], labels (B,))."""
    num_views = len(samples[0][0])
    views = [torch.stack([s[0][v] for s in samples]) for v in range(num_views)]
    labels = torch.tensor([s[1] for s in samples])
    return views, labels


def build_eval_loaders(config: Config) -> tuple[DataLoader, DataLoader]:
    """Train (bank) and val loaders of un-augmented images for feature evaluation."""
    data = config.data
    view = EvalView(size=data.image_size, mean=data.mean, std=data.std)
    loaders = []
    for sub in (data.train_dir, data.val_dir):
        dataset = ImageFolderDataset(data.root / sub, transform=view, in_memory=data.in_memory)
        loaders.append(DataLoader(dataset, batch_size=data.eval_batch_size, num_workers=data.num_workers))
    return loaders[0], loaders[1]

"""Robustness to common corruptions: accuracy of a frozen backbone on corrupted copies of the val images.

Hendrycks & Dietterich 2019, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations" (CIFAR-10-C). The classifier is fitted on the *clean* train features only —
the weighted kNN bank (`eval.knn`: its primary k, DINO's 20, and temperature, `eval/knn.py`) or the linear
probe on the same pooled features (`eval.linear`'s L-BFGS settings, `eval/linear_probe.py`; its
last-blocks ViT input does not apply) — and scores every (corruption, severity) copy
of an evenly spaced subset of the val images, each copy passing through the same eval
transform and the backbone in eval mode. Reported, in percent:

    clean_acc            the classifier on the clean features of the same val subset
    accuracy[c][s]       corruption c at severity s
    mean_corruption_acc  the mean over every evaluated (corruption, severity) cell

The corrupted copies are generated on the fly (`source: generate`, `data/transforms/corruptions.py`,
one RNG per (seed, corruption, severity, image), so a copy does not depend on the subset or the
batching), or read from a CIFAR-10-C folder (`source: npy`, `data/formats/cifar10c.py`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from pydantic import Field, model_validator
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from pretrainlab.config.component import Strict
from pretrainlab.data.formats.cifar10c import list_corruptions, read_cifar10c
from pretrainlab.data.transforms.corruptions import CORRUPTIONS, MAX_SEVERITY, check_corruption_names, corrupt
from pretrainlab.eval.knn import extract_features, knn_classify
from pretrainlab.eval.knn_eval import KNNConfig
from pretrainlab.eval.linear_probe import LinearProbeConfig, fit_probe_head
from pretrainlab.eval.pooled_features import PooledFeatures
from pretrainlab.models.backbones.base import Backbone

log = logging.getLogger(__name__)


class RobustnessConfig(Strict):
    """CIFAR-10-C corruptions of the val images (phase `robustness`), classified with the clean train features."""

    corruptions: list[str] = Field(
        default_factory=lambda: list(CORRUPTIONS),
        min_length=1,
        description=("names in data/transforms/corruptions.py; with source npy, the <name>.npy files of npy_dir"),
    )
    severities: list[int] = Field(default_factory=lambda: list(range(1, MAX_SEVERITY + 1)), min_length=1)
    source: Literal["generate", "npy"] = Field("generate", description="generate the copies, or read CIFAR-10-C files")
    npy_dir: Path | None = Field(None, description="with source npy: the folder of <corruption>.npy and labels.npy")
    max_images: int | None = Field(1000, ge=1, description="evenly spaced val (or npy) images per cell; null = all")
    classifier: Literal["knn", "linear"] = Field("knn", description="kNN bank (eval.knn) or linear probe (eval.linear)")
    seed: int = Field(0, ge=0, description="seed of the generated corruptions")

    @model_validator(mode="after")
    def _check(self) -> RobustnessConfig:
        for key, values in (("corruptions", self.corruptions), ("severities", self.severities)):
            if len(set(values)) != len(values):
                raise ValueError(f"{key} {values} lists a value twice")
        if any(not 1 <= severity <= MAX_SEVERITY for severity in self.severities):
            raise ValueError(f"severities {self.severities} are not valid; expected values in 1..{MAX_SEVERITY}")
        if self.source == "generate":
            check_corruption_names(self.corruptions)
        elif self.npy_dir is None:
            raise ValueError("source npy needs npy_dir, the folder of the CIFAR-10-C <corruption>.npy files")
        return self


def check_robustness_channels(config: RobustnessConfig, channels: int, key: str) -> None:
    """Raise ValueError naming `key` when images of `channels` channels cannot be corrupted as `config` asks:
    the corruptions take 1 or 3 channels, and `saturate` needs 3."""
    if config.source == "npy":
        return  # the channels of the files are checked when they are read
    if channels not in (1, 3):
        raise ValueError(f"{key}: the robustness corruptions take 1- or 3-channel images, but data.channels={channels}")
    colour_only = [name for name in config.corruptions if CORRUPTIONS[name].is_colour_only]
    if channels == 1 and colour_only:
        raise ValueError(f"{key}: eval.robustness.corruptions lists {colour_only}, which needs RGB images, but "
                         f"data.channels=1; remove it from eval.robustness.corruptions")  # fmt: skip


def evenly_spaced(num: int, max_count: int | None) -> list[int]:
    """`max_count` indices spread evenly over range(num) (all of them when max_count is None or >= num)."""
    if max_count is None or max_count >= num:
        return list(range(num))
    step = num / max_count
    return [int(i * step) for i in range(max_count)]


def sample_rng(seed: int, corruption: str, severity: int, index: int) -> np.random.Generator:
    """The generator of one corrupted copy: image `index` of the val set under (corruption, severity)."""
    return np.random.default_rng([seed, severity, index, int.from_bytes(corruption.encode(), "little")])


class CorruptedImages(Dataset):
    """(transform(image'), label) where image' is `images[i]` corrupted with (corruption, severity) and
    `sample_rng(seed, corruption, severity, ids[i])`; `corruption=None` takes the images as they are
    (CIFAR-10-C files, already corrupted)."""

    def __init__(self, images: Sequence[np.ndarray], labels: Sequence[int], transform: Callable[[np.ndarray], Tensor],
                 corruption: str | None, severity: int, *, ids: Sequence[int], seed: int) -> None:  # fmt: skip
        if len(images) != len(labels) or len(images) != len(ids):
            raise ValueError(f"got {len(images)} images, {len(labels)} labels and {len(ids)} ids; expected one each")
        self.images, self.labels, self.transform = images, labels, transform
        self.corruption, self.severity, self.ids, self.seed = corruption, severity, ids, seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.images[index]
        if self.corruption is not None:
            rng = sample_rng(self.seed, self.corruption, self.severity, self.ids[index])
            image = corrupt(image, self.corruption, self.severity, rng)
        return self.transform(image), int(self.labels[index])


def build_scorer(features: PooledFeatures, config: RobustnessConfig, knn: KNNConfig,
                 linear: LinearProbeConfig) -> Callable[[Tensor, Tensor], float]:  # fmt: skip
    """(features (M, D), labels (M,)) -> top-1 % of the classifier fitted on the clean train features."""
    num_classes = int(max(features.train_labels.max(), features.val_labels.max())) + 1
    if config.classifier == "knn":

        def knn_top1(test: Tensor, labels: Tensor) -> float:
            return knn_classify(features.train, features.train_labels, test, labels, k=knn.k, ks=(),
                                temperature=knn.temperature, num_classes=num_classes).top1  # fmt: skip

        return knn_top1
    head, fit = fit_probe_head(features.train, features.train_labels, features.val, features.val_labels,
                               num_classes=num_classes, max_iter=linear.max_iter,
                               weight_decay=linear.weight_decay)  # fmt: skip
    log.info("robustness: linear probe fitted on clean features (val top-1 %.2f)", fit.top1)

    def probe_top1(test: Tensor, labels: Tensor) -> float:
        with torch.no_grad():
            return float((head(test).argmax(dim=1) == labels).float().mean()) * 100.0

    return probe_top1


def _corrupted_sets(config: RobustnessConfig, dataset: Any, ids: list[int],
                    num_classes: int) -> Iterator[tuple[str, int, CorruptedImages]]:  # fmt: skip
    """(corruption, severity, its copies of the images) for every cell, in table order."""
    samples = [dataset.load(index) for index in ids]  # uint8 (H, W, C) images before the eval transform
    clean, clean_labels = [image for image, _ in samples], [label for _, label in samples]
    for corruption in config.corruptions:
        for severity in config.severities:
            if config.source == "generate":
                yield corruption, severity, CorruptedImages(clean, clean_labels, dataset.transform, corruption,
                                                            severity, ids=ids, seed=config.seed)  # fmt: skip
                continue
            images, labels = read_cifar10c(config.npy_dir, corruption, severity)
            path, channels = Path(config.npy_dir) / f"{corruption}.npy", clean[0].shape[2]
            if images.shape[3] != channels:
                raise ValueError(f"{path}: images have {images.shape[3]} channels, the run's images {channels}")
            if int(labels.max()) >= num_classes:
                raise ValueError(f"{path}: labels reach {int(labels.max())}; the run has classes 0..{num_classes - 1}")
            subset = evenly_spaced(len(images), config.max_images)
            yield corruption, severity, CorruptedImages(images[subset], labels[subset], dataset.transform, None,
                                                        severity, ids=subset, seed=config.seed)  # fmt: skip


def _check_npy_dir(config: RobustnessConfig) -> None:
    """With source npy: every configured corruption has its file."""
    available = list_corruptions(config.npy_dir)
    missing = [name for name in config.corruptions if name not in available]
    if missing:
        raise FileNotFoundError(f"CIFAR-10-C folder {config.npy_dir}: no {', '.join(f'{m}.npy' for m in missing)}; "
                                f"available: {', '.join(available) or 'none'}")  # fmt: skip


def evaluate_robustness(backbone: Backbone, features: PooledFeatures, val_loader: DataLoader, config: RobustnessConfig,
                        *, knn: KNNConfig, linear: LinearProbeConfig) -> dict[str, Any]:  # fmt: skip
    """Accuracy of `backbone` on every (corruption, severity) copy of the val images; JSON-ready.

    Args:
        backbone: the evaluated backbone; its `pooled` features are read in eval mode (mode restored).
        features: its clean pooled features of the train set (the classifier's) and of `val_loader`'s set,
            in loader order (`extract_pooled_features`).
        val_loader: the run's val loader (un-shuffled); its dataset's `load(i)` gives the uint8 (H, W, C)
            image i before the eval transform, `transform` the transform (every `data.source`'s dataset:
            image folders, CIFAR batches, object crops).
        config: corruptions, severities, source, subset, classifier, seed.
        knn: k (clipped to the bank size) and temperature of the kNN classifier.
        linear: settings of the linear probe.

    Returns:
        classifier (and k), source, num_images, corruptions, severities, clean_acc, accuracy {corruption:
        {severity: acc}}, corruption_mean {corruption: acc}, severity_mean {severity: acc}, mean_corruption_acc.
    """
    dataset = val_loader.dataset
    if len(features.val) != len(dataset):
        raise ValueError(f"features.val has {len(features.val)} rows but the val set {len(dataset)} images")
    if config.source == "npy":
        _check_npy_dir(config)
    ids = evenly_spaced(len(dataset), config.max_images)
    score = build_scorer(features, config, knn, linear)
    clean_acc = score(features.val[ids], features.val_labels[ids])
    num_classes = int(max(features.train_labels.max(), features.val_labels.max())) + 1
    was_training = backbone.training
    backbone.eval()
    device = next(backbone.parameters()).device
    accuracy: dict[str, dict[str, float]] = {name: {} for name in config.corruptions}
    try:
        for corruption, severity, copies in _corrupted_sets(config, dataset, ids, num_classes):
            loader = DataLoader(copies, batch_size=val_loader.batch_size, num_workers=val_loader.num_workers)
            test, test_labels = extract_features(lambda x: backbone(x).pooled, loader, device, gather=False)
            accuracy[corruption][str(severity)] = score(test, test_labels)
            log.info("robustness %s severity %d: top-1 %.2f", corruption, severity, accuracy[corruption][str(severity)])
    finally:
        backbone.train(was_training)
    return {
        "classifier": config.classifier,
        **({"k": min(knn.k, len(features.train))} if config.classifier == "knn" else {}),
        "source": config.source,
        "num_images": len(ids),
        "corruptions": list(config.corruptions),
        "severities": list(config.severities),
        "clean_acc": clean_acc,
        "accuracy": accuracy,
        "corruption_mean": {name: float(np.mean(list(row.values()))) for name, row in accuracy.items()},
        "severity_mean": {
            str(s): float(np.mean([row[str(s)] for row in accuracy.values()])) for s in config.severities
        },
        "mean_corruption_acc": float(np.mean([value for row in accuracy.values() for value in row.values()])),
    }


def robustness_markdown(results: dict[str, dict[str, Any]]) -> str:
    """One table per evaluated backbone ({backbone: `evaluate_robustness` result}): rows corruptions then
    their mean, columns clean, each severity and the mean over severities (top-1 %)."""
    sections = []
    for backbone, result in results.items():
        severities = [str(s) for s in result["severities"]]
        clean = f"{result['clean_acc']:.2f}"
        lines = [f"### {backbone} ({result['classifier']}, {result['num_images']} images, {result['source']})", "",
                 "| corruption | clean | " + " | ".join(f"s{s}" for s in severities) + " | mean |",
                 "|---|" + "---:|" * (len(severities) + 2)]  # fmt: skip
        for name, row in result["accuracy"].items():
            cells = [f"{row[s]:.2f}" for s in severities]
            lines.append(f"| {name} | {clean} | " + " | ".join(cells) + f" | {result['corruption_mean'][name]:.2f} |")
        means = [f"{result['severity_mean'][s]:.2f}" for s in severities]
        lines.append(f"| **mean** | {clean} | " + " | ".join(means) + f" | **{result['mean_corruption_acc']:.2f}** |")
        sections.append("\n".join(lines) + "\n")
    return "\n".join(sections)


def plot_robustness(results: dict[str, dict[str, Any]], path: Path) -> None:
    """Heatmaps side by side, one per backbone ({backbone: `evaluate_robustness` result}): rows corruptions,
    columns clean, each severity and the mean, cells annotated with top-1 %, one colour scale 0..100."""
    if not results:
        raise ValueError(f"no robustness results to plot into {path}")
    first = next(iter(results.values()))
    if any(result["accuracy"].keys() != first["accuracy"].keys() for result in results.values()):
        raise ValueError(f"the backbones of {list(results)} were scored on different corruptions; plot them apart")
    num_columns, num_rows = len(first["severities"]) + 2, len(first["corruptions"])
    fig, axes = plt.subplots(1, len(results), squeeze=False, layout="constrained",
                             figsize=(2.5 + 0.7 * num_columns * len(results), 1.2 + 0.4 * num_rows))  # fmt: skip
    try:
        for index, (axis, (backbone, result)) in enumerate(zip(axes[0], results.items())):
            severities = [str(s) for s in result["severities"]]
            names = list(result["accuracy"])
            rows = [[result["clean_acc"], *(result["accuracy"][name][s] for s in severities),
                     result["corruption_mean"][name]] for name in names]  # fmt: skip
            values = np.array(rows)  # (corruptions, severities + 2)
            image = axis.imshow(values, vmin=0.0, vmax=100.0, cmap="viridis", aspect="auto")
            for (row, column), value in np.ndenumerate(values):
                axis.text(column, row, f"{value:.0f}", ha="center", va="center", fontsize=7,
                          color="black" if value > 60 else "white")  # fmt: skip
            axis.set_xticks(range(values.shape[1]), ["clean", *(f"s{s}" for s in severities), "mean"])
            axis.set_yticks(range(len(names)), names if index == 0 else [])  # the rows of every panel agree
            axis.set_title(f"{backbone}: clean {result['clean_acc']:.1f}, mean {result['mean_corruption_acc']:.1f}",
                           fontsize=9)  # fmt: skip
        fig.colorbar(image, ax=list(axes[0]), label="top-1 (%)")
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)

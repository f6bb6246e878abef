"""A backbone's pooled features of the classification train and val sets, extracted once.

kNN, the linear probe and the t-SNE plot of a run all read the same features of the same
images; a study extracts them once per backbone (`study.RunForEval.pooled_features`).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor
from torch.utils.data import DataLoader

from pretrainlab.eval.knn import extract_features
from pretrainlab.models.backbones.base import Backbone


@dataclass(frozen=True)
class PooledFeatures:
    """train (N, D) / val (M, D) float32 features and their (N,) / (M,) int64 labels, on the CPU."""

    train: Tensor
    train_labels: Tensor
    val: Tensor
    val_labels: Tensor


def extract_pooled_features(backbone: Backbone, train_loader: DataLoader, val_loader: DataLoader) -> PooledFeatures:
    """`backbone(images).pooled` over both loaders, in eval mode (the backbone's mode is restored)."""
    was_training = backbone.training
    backbone.eval()
    device = next(backbone.parameters()).device

    def pooled(images: Tensor) -> Tensor:
        return backbone(images).pooled

    train, train_labels = extract_features(pooled, train_loader, device)
    val, val_labels = extract_features(pooled, val_loader, device)
    backbone.train(was_training)
    return PooledFeatures(train, train_labels, val, val_labels)

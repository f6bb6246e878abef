"""A backbone's features of the classification train and val sets, extracted in one pass each.

Pooled features: kNN, the linear probe and the t-SNE plot of a run all read the same features of
the same images; a study extracts them once per backbone (`study.phase.StudyContext.pooled_features`).

Last-blocks features: the input of DINO's linear probe on a ViT (Caron et al. 2021,
`eval_linear.py`), the CLS tokens of the last n blocks, each through the final norm,
concatenated, optionally followed by the average of the last block's patch tokens. They need a
pass of their own (`extract_last_blocks_features`), run only by the `linear` phase.

Both run on rank 0 only (study evaluations and the periodic kNN check), over loaders that are
not sharded, so the features are never gathered across ranks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from pretrainlab.eval.knn import extract_features
from pretrainlab.models.backbones.base import Backbone
from pretrainlab.models.backbones.timm_backbone import TimmBackbone


@dataclass(frozen=True)
class PooledFeatures:
    """train (N, D) / val (M, D) float32 features and their (N,) / (M,) int64 labels, on the CPU."""

    train: Tensor
    train_labels: Tensor
    val: Tensor
    val_labels: Tensor


def _extract(
    backbone: Backbone, features_of: Callable[[Tensor], Tensor], train_loader: DataLoader, val_loader: DataLoader
) -> PooledFeatures:
    """`features_of(images)` over both loaders with the backbone in eval mode (its mode restored, also on error)."""
    was_training = backbone.training
    backbone.eval()
    device = next(backbone.parameters()).device
    try:
        train, train_labels = extract_features(features_of, train_loader, device, gather=False)
        val, val_labels = extract_features(features_of, val_loader, device, gather=False)
    finally:
        backbone.train(was_training)
    return PooledFeatures(train, train_labels, val, val_labels)


def extract_pooled_features(backbone: Backbone, train_loader: DataLoader, val_loader: DataLoader) -> PooledFeatures:
    """`backbone(images).pooled` over both loaders, in eval mode (the backbone's mode is restored)."""
    return _extract(backbone, lambda images: backbone(images).pooled, train_loader, val_loader)


def last_blocks_features(backbone: TimmBackbone, images: Tensor, num_blocks: int, use_patch_average: bool) -> Tensor:
    """DINO's linear-probe input of a batch: (B, C, H, W) -> (B, n * D), or (B, (n + 1) * D) with the
    average patch token appended.

    The CLS tokens come earliest block first, so the last D columns before the patch average are
    `pooled`. DINO's own code interleaves CLS and average column by column and only supports n = 1
    with the average; a linear probe on standardised inputs does not depend on the column order.
    """
    cls, patch_tokens = backbone.last_blocks_tokens(images, num_blocks)  # (B, n, D), (B, N, D)
    parts = [cls.flatten(1)]  # (B, n * D)
    if use_patch_average:
        parts.append(patch_tokens.mean(dim=1))  # (B, D)
    return torch.cat(parts, dim=1)


def extract_last_blocks_features(
    backbone: Backbone,
    train_loader: DataLoader,
    val_loader: DataLoader,
    *,
    num_blocks: int,
    use_patch_average: bool,
) -> PooledFeatures:
    """`last_blocks_features` over both loaders, in eval mode (the backbone's mode is restored).

    Raises:
        ValueError: naming the backbone, when it is not a timm ViT pooling by a CLS token with at least
            `num_blocks` blocks (checked before any image is read).
    """
    if not isinstance(backbone, TimmBackbone):
        raise ValueError(f"the CLS tokens of the last {num_blocks} blocks need a timm ViT backbone; got "
                         f"{type(backbone).__name__}")  # fmt: skip
    backbone.check_last_blocks(num_blocks)
    return _extract(
        backbone,
        lambda images: last_blocks_features(backbone, images, num_blocks, use_patch_average),
        train_loader,
        val_loader,
    )

"""Linear probe on frozen features: multinomial logistic regression on standardised pooled
features, fitted full-batch with L-BFGS.

The features are extracted once (`eval/pooled_features.py`, shared with kNN), so the
probe costs seconds where DINO's protocol (100 epochs of SGD on augmented images, Caron
et al. 2021) costs hours; the numbers are therefore a cheap proxy for that protocol, in
the spirit of the scikit-learn logistic-regression probes of CLIP (Radford et al. 2021).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from pydantic import Field

from pretrainlab.config.component import Strict
from pretrainlab.eval.pooled_features import PooledFeatures

log = logging.getLogger(__name__)


class LinearProbeConfig(Strict):
    """Linear probe on frozen, standardised pooled features (`eval/linear_probe.py`), after pretraining."""

    max_iter: int = Field(100, ge=1, description="L-BFGS iterations (full batch)")
    weight_decay: float = Field(1e-4, ge=0.0, description="L2 penalty on the weights, added to the mean loss")


@dataclass(frozen=True)
class LinearProbeResult:
    """Top-1 accuracies in percent, and the fitting time."""

    top1: float
    train_top1: float
    num_train: int
    num_val: int
    seconds: float


def standardise(train_features: Tensor, val_features: Tensor) -> tuple[Tensor, Tensor]:
    """Zero mean, unit variance per dimension, with the statistics of the training features."""
    mean = train_features.mean(dim=0)
    std = train_features.std(dim=0).clamp_min(1e-6)  # constant dimensions stay 0
    return (train_features - mean) / std, (val_features - mean) / std


def fit_linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    val_features: Tensor,
    val_labels: Tensor,
    *,
    num_classes: int | None = None,
    max_iter: int = 100,
    weight_decay: float = 1e-4,
) -> LinearProbeResult:
    """Fit softmax regression on standardised features and score it on the val features.

    Args:
        train_features: (N, D) frozen features.
        train_labels: (N,) integer labels in [0, C).
        val_features: (M, D).
        val_labels: (M,) integer labels in [0, C).
        num_classes: C; default max label + 1.
        max_iter: L-BFGS iterations (each one or more full-batch evaluations).
        weight_decay: lambda of the penalty lambda / 2 * ||W||^2 added to the mean cross-entropy.
    """
    if train_features.ndim != 2 or val_features.ndim != 2 or train_features.shape[1] != val_features.shape[1]:
        raise ValueError(
            f"expected train (N, D) and val (M, D) features with the same D, got "
            f"{tuple(train_features.shape)} and {tuple(val_features.shape)}"
        )
    if len(train_features) != len(train_labels) or len(val_features) != len(val_labels) or len(val_labels) == 0:
        raise ValueError(
            f"features and labels differ in length or are empty: train {len(train_features)} vs "
            f"{len(train_labels)}, val {len(val_features)} vs {len(val_labels)}"
        )
    started = time.perf_counter()
    train_labels, val_labels = train_labels.long(), val_labels.long()
    if num_classes is None:
        num_classes = int(max(train_labels.max(), val_labels.max())) + 1
    train_x, val_x = standardise(train_features.float(), val_features.float())
    weight = torch.zeros(train_x.shape[1], num_classes, requires_grad=True)  # (D, C)
    bias = torch.zeros(num_classes, requires_grad=True)  # (C,)
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(train_x @ weight + bias, train_labels) + 0.5 * weight_decay * weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        train_top1 = _top1(train_x @ weight + bias, train_labels)
        top1 = _top1(val_x @ weight + bias, val_labels)
    return LinearProbeResult(top1, train_top1, len(train_x), len(val_x), time.perf_counter() - started)


def _top1(logits: Tensor, labels: Tensor) -> float:
    return float((logits.argmax(dim=1) == labels).float().mean()) * 100.0


def linear_probe_scores(features: PooledFeatures, config: LinearProbeConfig) -> dict[str, Any]:
    """Fit the probe on the train features, score it on the val features; JSON-ready."""
    result = fit_linear_probe(
        features.train,
        features.train_labels,
        features.val,
        features.val_labels,
        max_iter=config.max_iter,
        weight_decay=config.weight_decay,
    )
    log.info("linear probe top-1 %.2f (train %.2f, fit %.1f s)", result.top1, result.train_top1, result.seconds)
    return asdict(result)

"""Linear probe on frozen features: multinomial logistic regression on standardised features,
fitted full-batch with L-BFGS.

The features are extracted once (`eval/pooled_features.py`): the pooled features shared with
kNN, or on a ViT DINO's probe input, the CLS tokens of the last n blocks concatenated
(`last_n_blocks`, optionally with the average patch token). The probe costs seconds where
DINO's protocol (100 epochs of SGD on augmented images, Caron et al. 2021) costs hours; the
numbers are therefore a cheap proxy for that protocol, in the spirit of the scikit-learn
logistic-regression probes of CLIP (Radford et al. 2021).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pydantic import Field

from pretrainlab.config.component import Strict
from pretrainlab.eval.pooled_features import PooledFeatures

log = logging.getLogger(__name__)


class LinearProbeConfig(Strict):
    """Linear probe on frozen, standardised features (`eval/linear_probe.py`), after pretraining: the pooled
    features, or with `last_n_blocks` > 1 / `avgpool_patch_tokens` on a timm ViT, DINO's probe input."""

    max_iter: int = Field(100, ge=1, description="L-BFGS iterations (full batch)")
    weight_decay: float = Field(1e-4, ge=0.0, description="L2 penalty on the weights, added to the mean loss")
    last_n_blocks: int = Field(1, ge=1, description=(
        "ViT: concatenate the CLS tokens of the last n blocks, each through the final norm (DINO: 4 for ViT-S, "
        "1 for ViT-B); 1 = the pooled feature"))  # fmt: skip
    avgpool_patch_tokens: bool = Field(False, description=(
        "ViT: append the average of the last block's patch tokens (DINO's avgpool_patchtokens, for ViT-B)"))

    @property
    def reads_last_blocks(self) -> bool:
        """True when the probe needs the last-blocks features of a ViT instead of the shared pooled ones."""
        return self.last_n_blocks > 1 or self.avgpool_patch_tokens

    def describe_features(self) -> str:
        """What the probe reads, e.g. `pooled` or `CLS of the last 4 blocks + average patch token`."""
        if not self.reads_last_blocks:
            return "pooled"
        blocks = "the last block" if self.last_n_blocks == 1 else f"the last {self.last_n_blocks} blocks"
        return f"CLS of {blocks}" + (" + average patch token" if self.avgpool_patch_tokens else "")


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


class ProbeHead(nn.Module):
    """The fitted probe as a module: (B, D) pooled features -> (B, C) logits, standardisation included, so
    Grad-CAM and the loss landscape put a classifier on a frozen backbone."""

    def __init__(self, mean: Tensor, std: Tensor, weight: Tensor, bias: Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)  # (D,)
        self.register_buffer("std", std)  # (D,)
        self.linear = nn.Linear(weight.shape[0], weight.shape[1])
        with torch.no_grad():
            self.linear.weight.copy_(weight.T)  # (C, D)
            self.linear.bias.copy_(bias)

    def forward(self, features: Tensor) -> Tensor:
        """(B, D) -> (B, C)."""
        return self.linear((features.float() - self.mean) / self.std)


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
    return fit_probe_head(train_features, train_labels, val_features, val_labels, num_classes=num_classes,
                          max_iter=max_iter, weight_decay=weight_decay)[1]  # fmt: skip


def fit_probe_head(
    train_features: Tensor,
    train_labels: Tensor,
    val_features: Tensor,
    val_labels: Tensor,
    *,
    num_classes: int | None = None,
    max_iter: int = 100,
    weight_decay: float = 1e-4,
) -> tuple[ProbeHead, LinearProbeResult]:
    """`fit_linear_probe`, also returning the fitted probe as a `ProbeHead` (eval mode, on the CPU)."""
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
    mean = train_features.float().mean(dim=0)
    std = train_features.float().std(dim=0).clamp_min(1e-6)
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
    result = LinearProbeResult(top1, train_top1, len(train_x), len(val_x), time.perf_counter() - started)
    return ProbeHead(mean, std, weight.detach(), bias.detach()).eval(), result


def _top1(logits: Tensor, labels: Tensor) -> float:
    return float((logits.argmax(dim=1) == labels).float().mean()) * 100.0


def linear_probe_scores(features: PooledFeatures, config: LinearProbeConfig) -> dict[str, Any]:
    """Fit the probe on the train features, score it on the val features; JSON-ready, with the feature width."""
    result = fit_linear_probe(
        features.train,
        features.train_labels,
        features.val,
        features.val_labels,
        max_iter=config.max_iter,
        weight_decay=config.weight_decay,
    )
    log.info("linear probe top-1 %.2f (train %.2f, fit %.1f s)", result.top1, result.train_top1, result.seconds)
    return asdict(result) | {"feature_dim": int(features.train.shape[1])}

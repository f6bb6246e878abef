"""A run's backbone with a linear classifier on top: what Grad-CAM and the loss landscape look at.

The classifier is the run's linear probe (`eval/linear_probe.py`), fitted on the pooled features of
the classification train set, standardisation included; the backbone is the run's evaluated backbone
(`pretrained`: the weights of `pretrain/checkpoints/last.ckpt`; `random_init`: as pretraining started).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from torch import Tensor, nn

from pretrainlab.eval.linear_probe import LinearProbeResult, ProbeHead

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from pretrainlab.config.schema import Config
    from pretrainlab.models.backbones.base import Backbone

log = logging.getLogger(__name__)

Weights = Literal["pretrained", "random_init"]


class BackboneClassifier(nn.Module):
    """(B, C, H, W) images -> (B, K) logits: the backbone's pooled features through the probe."""

    def __init__(self, backbone: Backbone, head: ProbeHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.backbone(images).pooled)


@dataclass
class ProbedModel:
    """A run's backbone, its fitted probe and the loaders it was fitted / scored on."""

    config: Config
    weights: Weights
    classifier: BackboneClassifier  # eval mode
    probe: LinearProbeResult
    train_loader: DataLoader
    val_loader: DataLoader

    @property
    def class_names(self) -> list[str]:
        return list(self.val_loader.dataset.classes)


def load_backbone(run_dir: Path, weights: Weights = "pretrained") -> tuple[Config, Backbone]:
    """The run's config and its evaluated backbone (eval mode, CPU)."""
    from pretrainlab.study.run import load_pretrained_method, load_run_config, random_init_method

    if weights == "pretrained":
        config, method, _ = load_pretrained_method(run_dir)
    elif weights == "random_init":
        config = load_run_config(run_dir)
        method = random_init_method(config)
    else:
        raise ValueError(f"weights must be 'pretrained' or 'random_init', got {weights!r}")
    return config, method.eval_backbone().eval()


def probed_model(run_dir: Path, weights: Weights = "pretrained") -> ProbedModel:
    """Load the run's backbone, extract its pooled features and fit the linear probe (`eval.linear`)."""
    from pretrainlab.data.loaders import build_eval_loaders
    from pretrainlab.eval.linear_probe import fit_probe_head
    from pretrainlab.eval.pooled_features import extract_pooled_features

    config, backbone = load_backbone(run_dir, weights)
    train_loader, val_loader = build_eval_loaders(config)
    features = extract_pooled_features(backbone, train_loader, val_loader)
    head, result = fit_probe_head(features.train, features.train_labels, features.val, features.val_labels,
                                  max_iter=config.eval.linear.max_iter,
                                  weight_decay=config.eval.linear.weight_decay)  # fmt: skip
    log.info("%s: linear probe of the %s backbone, val top-1 %.2f", run_dir, weights, result.top1)
    return ProbedModel(config, weights, BackboneClassifier(backbone, head).eval(), result, train_loader, val_loader)

"""kNN evaluation of a backbone on the run's train (bank) / val images, and the
Lightning callback that runs it during pretraining (pretrained and random-init)."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from torch.utils.data import DataLoader, Subset

from pydantic import Field, PositiveInt

from pretrainlab.config.component import Strict
from pretrainlab.eval.knn import knn_classify
from pretrainlab.eval.pooled_features import PooledFeatures, extract_pooled_features
from pretrainlab.models.backbones.base import Backbone

log = logging.getLogger(__name__)


class KNNConfig(Strict):
    """Weighted kNN on pooled features (DINO protocol: k = 20, T = 0.07); `every_n_epochs` adds a check during
    pretraining."""

    k: int = Field(20, ge=1, description="primary k: the one knn_top1 / knn_f1 report (scored beside `ks`)")
    ks: list[PositiveInt] = Field(default_factory=lambda: [10, 20, 100, 200], description="k values scored (nb_knn)")
    temperature: float = Field(0.07, gt=0.0)
    every_n_epochs: int = Field(0, ge=0, description="evaluate during pretraining every K epochs; 0 = end only")
    max_train_samples: int | None = Field(None, ge=1, description="train bank subset for periodic evaluations")


def evaluate_knn(
    backbone: Backbone,
    train_loader: DataLoader,
    val_loader: DataLoader,
    config: KNNConfig,
    *,
    max_train_samples: int | None = None,
) -> dict[str, Any]:
    """Weighted kNN (DINO protocol) on `pooled` features; returns JSON-ready scores for every k."""
    if max_train_samples is not None and max_train_samples < len(train_loader.dataset):
        step = len(train_loader.dataset) / max_train_samples
        subset = Subset(train_loader.dataset, [int(i * step) for i in range(max_train_samples)])
        train_loader = DataLoader(subset, batch_size=train_loader.batch_size, num_workers=train_loader.num_workers)
    return knn_scores(extract_pooled_features(backbone, train_loader, val_loader), config)


def knn_scores(features: PooledFeatures, config: KNNConfig, *, num_classes: int | None = None) -> dict[str, Any]:
    """Weighted kNN of the val features against the train bank; JSON-ready scores for every k.

    Args:
        features: train (bank) and val features with their labels.
        config: k, ks and T.
        num_classes: C, the size of the confusion matrix (the dataset's class count); default max label + 1.

    Returns:
        `k` (the primary k, clipped to the bank size), `temperature`, its `top1` / `top5` (%), macro
        `precision` / `recall` / `f1` (fractions, over the classes in the val labels or the predictions,
        see `eval/knn.py`), `per_k` {str(k): the same five scores}, `confusion` (C x C, rows = true class),
        `num_train` and `num_val`.
    """
    if num_classes is None:
        num_classes = int(max(features.train_labels.max(), features.val_labels.max())) + 1
    result = knn_classify(
        features.train,
        features.train_labels,
        features.val,
        features.val_labels,
        k=config.k,
        ks=config.ks,
        temperature=config.temperature,
        num_classes=num_classes,
    )
    names = ("top1", "top5", "precision", "recall", "f1")
    return {
        "k": result.primary.k,
        "temperature": config.temperature,
        **{name: getattr(result.primary, name) for name in names},
        "per_k": {str(k): {name: getattr(s, name) for name in names} for k, s in result.per_k.items()},
        "confusion": result.confusion.tolist(),
        "num_train": len(features.train),
        "num_val": len(features.val),
    }


class KNNEvalCallback(L.Callback):
    """kNN of the method's eval backbone every `every_n_epochs` during pretraining (5k-image bank by default),
    logged as `eval/knn_top1` with its epoch; rank 0 evaluates, the other processes go on."""

    def __init__(self, train_loader: DataLoader, val_loader: DataLoader, config: KNNConfig) -> None:
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.config = config

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        every = self.config.every_n_epochs
        epoch = trainer.current_epoch + 1
        if every == 0 or epoch % every != 0 or epoch == trainer.max_epochs or not trainer.is_global_zero:
            return  # the evaluation at the end of a pretraining phase is a study phase (`knn`)
        scores = evaluate_knn(
            pl_module.method.eval_backbone(),
            self.train_loader,
            self.val_loader,
            self.config,
            max_train_samples=self.config.max_train_samples,
        )
        log.info("epoch %d kNN top-1 %.2f", epoch, scores["top1"])
        for logger in trainer.loggers:
            # at the epoch's last step: the step after it is the next epoch's first, which a resume may redo
            logger.log_metrics({"eval/knn_top1": scores["top1"], "epoch": epoch}, step=trainer.global_step - 1)

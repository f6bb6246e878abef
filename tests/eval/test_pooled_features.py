"""Pooled features are extracted once per backbone and shared by kNN, the linear probe and t-SNE."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from pretrainlab.eval import pooled_features
from pretrainlab.config.loading import load_config
from pretrainlab.eval.knn import extract_features
from pretrainlab.eval.knn_eval import evaluate_knn, knn_scores
from pretrainlab.eval.linear_probe import fit_linear_probe, linear_probe_scores
from pretrainlab.eval.pooled_features import extract_pooled_features
from pretrainlab.run_dir import RunDir
from pretrainlab.study.knn_phase import KNNPhaseConfig, run_knn_phase
from pretrainlab.study.linear_phase import LinearPhaseConfig, run_linear_phase
from pretrainlab.study.phase import StudyContext
from pretrainlab.models.backbones.sebnet import SEBNet


class _Images(TensorDataset):
    classes = ("a", "b", "c")


def _loader(num: int, seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(num, 3, 32, 32, generator=generator)
    labels = torch.arange(num) % 3
    images += labels.view(-1, 1, 1, 1).float()  # a learnable class signal
    return DataLoader(_Images(images, labels), batch_size=16)


class _Method:
    def __init__(self, seed: int) -> None:
        torch.manual_seed(seed)
        self.backbone = SEBNet("s")

    def eval_backbone(self) -> SEBNet:
        return self.backbone


def test_scores_from_shared_features_equal_the_per_call_evaluations() -> None:
    backbone = SEBNet("s").train()
    train, val = _loader(48, 0), _loader(24, 1)
    features = extract_pooled_features(backbone, train, val)
    assert backbone.training  # mode restored
    assert features.train.shape == (48, backbone.embed_dim) and features.val_labels.shape == (24,)
    config = load_config(None)
    assert knn_scores(features, config.eval.knn) == evaluate_knn(backbone, train, val, config.eval.knn)
    backbone.eval()  # the probe reads eval-mode features
    train_x, train_y = extract_features(lambda images: backbone(images).pooled, train, "cpu")
    val_x, val_y = extract_features(lambda images: backbone(images).pooled, val, "cpu")
    probe = fit_linear_probe(train_x, train_y, val_x, val_y, max_iter=config.eval.linear.max_iter,
                             weight_decay=config.eval.linear.weight_decay)  # fmt: skip
    assert linear_probe_scores(features, config.eval.linear)["top1"] == pytest.approx(probe.top1)


def test_a_study_extracts_each_backbones_features_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[int] = []

    def counting(*args: object) -> object:
        calls.append(1)
        return extract_pooled_features(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(pooled_features, "extract_pooled_features", counting)
    run = RunDir(tmp_path)
    context = StudyContext(load_config(None), run, {"pretrained": _Method(0), "random_init": _Method(1)},
                           (_loader(48, 0), _loader(24, 1)), _epoch=1)  # type: ignore[arg-type]  # fmt: skip
    knn = run_knn_phase(KNNPhaseConfig(), run.phase(1, "knn", "eval/epoch_1/knn"), context)
    linear = run_linear_phase(LinearPhaseConfig(), run.phase(2, "linear", "eval/epoch_1/linear"), context)
    assert len(calls) == 2 and set(knn["knn_top1"]) == set(linear["linear_top1"]) == {"pretrained", "random_init"}
    knn_dir, linear_dir = tmp_path / "eval" / "epoch_1" / "knn", tmp_path / "eval" / "epoch_1" / "linear"
    assert (knn_dir / "knn.json").is_file() and (knn_dir / "tsne.png").is_file() and (linear_dir / "linear.json").is_file()

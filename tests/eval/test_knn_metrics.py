"""kNN macro precision / recall / F1 against scikit-learn and by hand, `knn_scores`, and the `knn` phase's files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import precision_recall_fscore_support
from torch.utils.data import DataLoader, TensorDataset

from pretrainlab.config.loading import load_config
from pretrainlab.eval.knn import knn_classify
from pretrainlab.eval.knn_eval import KNNConfig, knn_scores
from pretrainlab.eval.pooled_features import PooledFeatures
from pretrainlab.models.backbones.sebnet import SEBNet
from pretrainlab.report.classification_tables import KNN_COLUMNS
from pretrainlab.run_dir import RunDir, read_json
from pretrainlab.study.knn_phase import KNNPhaseConfig, run_knn_phase
from pretrainlab.study.phase import StudyContext

# Eight val images of classes 0..3; class 1 is never predicted, class 4 is predicted but absent from the
# labels, class 5 is in neither (num_classes = 6).
Y_TRUE = [0, 0, 1, 1, 2, 2, 3, 3]
Y_PRED = [0, 0, 0, 2, 2, 4, 3, 3]
NUM_CLASSES = 6


def _predicting(y_pred: list[int], y_true: list[int], num_classes: int) -> PooledFeatures:
    """A one-hot bank (one image per class) and val features equal to the bank row of the wanted
    prediction: with k = 1 the kNN predicts exactly `y_pred`."""
    bank = torch.eye(num_classes)  # (C, C)
    return PooledFeatures(bank, torch.arange(num_classes), bank[torch.tensor(y_pred)], torch.tensor(y_true))


def test_macro_scores_by_hand_with_a_never_predicted_and_an_absent_class() -> None:
    features = _predicting(Y_PRED, Y_TRUE, NUM_CLASSES)
    result = knn_classify(features.train, features.train_labels, features.val, features.val_labels, k=1, ks=(),
                          num_classes=NUM_CLASSES)  # fmt: skip
    assert result.pred.tolist() == Y_PRED
    # per class (0, 1, 2, 3, 4): P = 2/3, 0, 1/2, 1, 0;  R = 1, 0, 1/2, 1, 0;  F1 = 0.8, 0, 0.5, 1, 0;  class 5 left out
    assert result.precision == pytest.approx((2 / 3 + 0.5 + 1) / 5)
    assert result.recall == pytest.approx(2.5 / 5)
    assert result.f1 == pytest.approx(2.3 / 5)
    assert result.top1 == 62.5
    assert result.confusion.shape == (6, 6) and result.confusion[2, 4] == 1 and result.confusion[1, 0] == 1
    assert result.confusion[5].sum() == 0 and result.confusion[:, 5].sum() == 0


@pytest.mark.parametrize("seed", range(5))
def test_macro_scores_equal_sklearn_over_the_labels_or_predictions(seed: int) -> None:
    generator = np.random.default_rng(seed)
    num_classes = 7
    y_true = generator.choice([0, 1, 2, 3, 4], size=40)
    y_pred = np.where(generator.random(40) < 0.6, y_true, generator.choice([0, 2, 3, 5], size=40))
    y_pred[y_true == 1] = 0  # class 1 is never predicted, 5 only predicted, 6 in neither
    features = _predicting(y_pred.tolist(), y_true.tolist(), num_classes)
    result = knn_classify(features.train, features.train_labels, features.val, features.val_labels, k=1, ks=(),
                          num_classes=num_classes)  # fmt: skip
    assert result.pred.tolist() == y_pred.tolist()
    labels = np.union1d(y_true, y_pred)  # the classes the macro average runs over
    precision, recall, f1, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="macro",
                                                               zero_division=0)  # fmt: skip
    assert (result.precision, result.recall, result.f1) == pytest.approx((precision, recall, f1), abs=1e-12)
    every_class = precision_recall_fscore_support(y_true, y_pred, labels=np.arange(num_classes), average="macro",
                                                  zero_division=0)  # fmt: skip
    assert result.f1 > every_class[2]  # class 6 (in neither) is not averaged in as a 0


def test_knn_scores_report_every_k_with_the_configured_primary_k() -> None:
    generator = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 8, generator=generator) * 3
    train_labels, val_labels = torch.arange(60) % 4, torch.arange(30) % 4
    features = PooledFeatures(centers[train_labels] + torch.randn(60, 8, generator=generator), train_labels,
                              centers[val_labels] + torch.randn(30, 8, generator=generator), val_labels)  # fmt: skip
    scores = knn_scores(features, KNNConfig(k=7, ks=[5, 100], temperature=0.1), num_classes=5)
    assert scores["k"] == 7 and scores["temperature"] == 0.1
    assert sorted(scores["per_k"], key=int) == ["5", "7", "60"]  # 100 clipped to the 60-image bank
    assert len(scores["confusion"]) == 5 and scores["num_train"] == 60 and scores["num_val"] == 30
    result = knn_classify(features.train, train_labels, features.val, val_labels, k=7, ks=[5, 100], temperature=0.1,
                          num_classes=5)  # fmt: skip
    for k, row in scores["per_k"].items():
        expected = result.per_k[int(k)]
        assert row == {"top1": expected.top1, "top5": expected.top5, "precision": expected.precision,
                       "recall": expected.recall, "f1": expected.f1}  # fmt: skip
    assert scores["f1"] == scores["per_k"]["7"]["f1"] == result.f1
    assert KNNConfig().k == 20 and KNNConfig().temperature == 0.07  # DINO's defaults
    with pytest.raises(ValueError, match="greater than 0"):
        KNNConfig(ks=[10, 0])


class _Images(TensorDataset):
    classes = ("circle", "square", "star")


def _loader(num: int, seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(num) % 3
    images = torch.randn(num, 3, 32, 32, generator=generator) + labels.view(-1, 1, 1, 1).float()
    return DataLoader(_Images(images, labels), batch_size=16)


class _Method:
    def __init__(self, seed: int) -> None:
        torch.manual_seed(seed)
        self.backbone = SEBNet("s").train()
        self.modes: list[bool] = []  # backbone.training at every forward
        self.backbone.register_forward_pre_hook(lambda module, _inputs: self.modes.append(module.training))

    def eval_backbone(self) -> SEBNet:
        return self.backbone


def test_the_knn_phase_writes_tables_and_confusion_images_and_returns_f1(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    run = RunDir(tmp_path)
    methods = {"pretrained": _Method(0), "random_init": _Method(1)}
    config = load_config(None, ["eval.knn.ks=[5, 20]"])
    loaders = (_loader(48, 0), _loader(24, 1))
    context = StudyContext(config, run, dict(methods), loaders, _epoch=3)  # type: ignore[arg-type]
    result = run_knn_phase(KNNPhaseConfig(), run.phase(1, "knn", "eval/epoch_3/knn"), context)
    for method in methods.values():  # extracted in eval mode, the training mode restored after
        assert method.modes and not any(method.modes) and method.backbone.training
    folder = tmp_path / "eval" / "epoch_3" / "knn"
    scores = read_json(folder / "knn.json")
    assert result["knn_f1"] == {name: 100 * scores[name]["f1"] for name in ("pretrained", "random_init")}  # in %
    assert result["knn_top1"]["pretrained"] == scores["pretrained"]["top1"]
    assert {"knn_top1", "knn_f1"} <= set(KNNPhaseConfig.summary_keys) <= set(result)
    text = (folder / "knn.md").read_text()
    assert text.count("| " + " | ".join(KNN_COLUMNS) + " |") == 2
    pretrained = text[text.index("## pretrained") : text.index("## random_init")]
    primary = scores["pretrained"]["per_k"]["20"]
    numbers = f"{primary['top1']:.2f} | {primary['top5']:.2f} | {primary['precision']:.4f} | {primary['recall']:.4f}"
    assert f"| 20 (primary) | 0.07 | {numbers} | {primary['f1']:.4f} |" in pretrained
    assert "| 5 | 0.07 |" in pretrained and "![pretrained confusion matrix](confusion_pretrained.png)" in pretrained
    for name in ("pretrained", "random_init"):
        assert (folder / f"confusion_{name}.png").stat().st_size > 0
        assert np.array(scores[name]["confusion"]).shape == (3, 3)
    assert result["knn_table"] == "eval/epoch_3/knn/knn.md"
    assert plt.get_fignums() == []

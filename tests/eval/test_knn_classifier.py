"""Weighted kNN: reference numbers from facebookresearch/dino `knn_classifier`, hand cases, scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import load_reference
from sklearn.metrics import f1_score, precision_score, recall_score

from pretrainlab.eval.knn import extract_features, knn_classify, knn_predict


def _tensors(z: np.lib.npyio.NpzFile, i: int) -> dict:
    keys = ("train_features", "train_labels", "test_features", "test_labels")
    return {key: torch.from_numpy(z[f"case{i}/{key}"]) for key in keys}


@pytest.mark.reference
@pytest.mark.parametrize(("chunk_size", "train_chunk_size"), [(1024, 16384), (64, 128)])
def test_matches_reference_cases(chunk_size: int, train_chunk_size: int) -> None:
    z = load_reference("knn")
    for i in range(int(z["n_cases"])):
        data, k, temperature = _tensors(z, i), int(z[f"case{i}/k"]), float(z[f"case{i}/T"])
        num_classes = int(z[f"case{i}/num_classes_arg"])
        chunks = {"chunk_size": chunk_size, "train_chunk_size": train_chunk_size}
        bank = (data["train_features"], data["train_labels"], data["test_features"])
        votes = knn_predict(*bank, k=k, temperature=temperature, num_classes=num_classes, **chunks)
        np.testing.assert_allclose(votes.numpy(), z[f"case{i}/votes"], rtol=1e-4, err_msg=f"case{i} votes")
        result = knn_classify(**data, k=k, ks=(), temperature=temperature, num_classes=num_classes, **chunks)
        np.testing.assert_array_equal(result.pred.numpy(), z[f"case{i}/pred"], err_msg=f"case{i} pred")
        assert result.top1 == pytest.approx(float(z[f"case{i}/top1"]), abs=1e-9), f"case{i} top1"
        assert result.top5 == pytest.approx(float(z[f"case{i}/top5"]), abs=1e-9), f"case{i} top5"


def test_votes_by_hand() -> None:
    s = 1 / math.sqrt(2)
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [s, s]])
    votes = knn_predict(train, torch.tensor([0, 1, 1]), torch.tensor([[1.0, 0.0]]), k=2, temperature=0.5, num_classes=3)
    # neighbours: row 0 (sim 1, class 0) and row 2 (sim 1/sqrt 2, class 1); row 1 (sim 0) is third
    expected = torch.tensor([[math.exp(1 / 0.5), math.exp(s / 0.5), 0.0]])
    torch.testing.assert_close(votes, expected)


def test_features_are_normalised_inside() -> None:
    train, test = torch.randn(40, 8), torch.randn(10, 8)
    labels = torch.randint(0, 4, (40,))
    votes = knn_predict(train, labels, test, k=5, num_classes=4)
    scaled = knn_predict(train * torch.rand(40, 1) * 10, labels, test * 3.0, k=5, num_classes=4)
    torch.testing.assert_close(scaled, votes, rtol=1e-4, atol=0.0)


def _clustered(num_train: int, num_test: int, num_classes: int, dim: int = 6) -> tuple[torch.Tensor, ...]:
    centers = torch.randn(num_classes, dim) * 2
    train_labels = torch.arange(num_train) % num_classes
    test_labels = torch.randint(0, num_classes, (num_test,))
    train = centers[train_labels] + torch.randn(num_train, dim)
    test = centers[test_labels] + torch.randn(num_test, dim)
    return train, train_labels, test, test_labels


def test_macro_scores_match_sklearn_and_confusion_is_consistent() -> None:
    train, train_labels, test, test_labels = _clustered(60, 50, 5)
    result = knn_classify(train, train_labels, test, test_labels, k=7, ks=())
    y_true, y_pred = test_labels.numpy(), result.pred.numpy()
    assert result.precision == pytest.approx(precision_score(y_true, y_pred, average="macro", zero_division=0))
    assert result.recall == pytest.approx(recall_score(y_true, y_pred, average="macro", zero_division=0))
    assert result.f1 == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0))
    assert result.confusion.shape == (5, 5)
    assert result.confusion.sum() == 50
    assert result.top1 == pytest.approx(100.0 * result.confusion.diagonal().sum().item() / 50)


def test_ks_are_clipped_and_share_one_neighbour_search() -> None:
    train, train_labels, test, test_labels = _clustered(30, 20, 3)
    result = knn_classify(train, train_labels, test, test_labels, k=50, ks=(10, 20, 100, 200), chunk_size=6)
    assert sorted(result.per_k) == [10, 20, 30]
    assert result.primary.k == 30
    for k, scores in result.per_k.items():
        votes = knn_predict(train, train_labels, test, k=k, num_classes=3)
        assert torch.equal(scores.pred, votes.argmax(dim=1)), k
    metrics = result.as_metrics()
    assert metrics["knn_top1"] == result.top1
    assert metrics["knn_f1_k10"] == result.per_k[10].f1


def test_top5_uses_at_most_k_classes() -> None:
    # k = 1: only the best class counts, so top5 equals top1 even with 10 classes
    train, train_labels, test, test_labels = _clustered(40, 30, 10)
    result = knn_classify(train, train_labels, test, test_labels, k=1, ks=())
    assert result.top5 == result.top1


def test_large_bank_in_small_chunks_equals_one_chunk() -> None:
    train, train_labels, test, _ = _clustered(500, 64, 4, dim=16)
    whole = knn_predict(train, train_labels, test, k=20, num_classes=4)
    chunked = knn_predict(train, train_labels, test, k=20, num_classes=4, chunk_size=10, train_chunk_size=37)
    torch.testing.assert_close(chunked, whole)


def test_bad_inputs_raise() -> None:
    train, labels, test = torch.randn(10, 4), torch.zeros(10, dtype=torch.long), torch.randn(3, 4)
    with pytest.raises(ValueError, match=r"same D, got \(10, 4\) and \(3, 5\)"):
        knn_predict(train, labels, torch.randn(3, 5), k=2, num_classes=2)
    with pytest.raises(ValueError, match=r"train_labels must lie in \[0, 2\), got min 0 and max 3"):
        knn_predict(train, torch.tensor([0] * 9 + [3]), test, k=2, num_classes=2)
    with pytest.raises(ValueError, match="k >= 1 and temperature > 0, got k=0"):
        knn_predict(train, labels, test, k=0, num_classes=2)
    with pytest.raises(ValueError, match=r"integer test_labels of shape \(3,\)"):
        knn_classify(train, labels, test, torch.zeros(4, dtype=torch.long))


def test_extract_features_in_batches_without_grad() -> None:
    weight = torch.randn(3, 5, requires_grad=True)
    images = torch.randn(7, 3)
    loader = [(images[:4], torch.tensor([0, 1, 2, 3])), (images[4:], torch.tensor([4, 5, 6]))]
    features, labels = extract_features(lambda x: x @ weight, loader, "cpu")
    assert features.shape == (7, 5) and not features.requires_grad
    torch.testing.assert_close(features, (images @ weight).detach())
    assert labels.tolist() == list(range(7))
    with pytest.raises(ValueError, match=r"\(B, D\) features, got \(4, 5, 1\)"):
        extract_features(lambda x: (x @ weight)[..., None], loader, "cpu")

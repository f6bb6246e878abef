"""2-D embedding maps: t-SNE separates separated clusters, the label-agreement score, UMAP as an optional
package, and the study's `plot_embeddings`."""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from pretrainlab.analysis.embeddings import (
    EmbeddingOptions,
    embed_2d,
    label_agreement,
    learning_rate_type,
    plot_embeddings,
    tsne_2d,
)
from pretrainlab.eval.pooled_features import PooledFeatures


def clusters(num_classes: int = 3, per_class: int = 20, dim: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, dim) points around `num_classes` far-apart centres, and their (N,) labels."""
    centres = 10.0 * torch.randn(num_classes, dim)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    return centres[labels] + 0.3 * torch.randn(len(labels), dim), labels


def test_label_agreement_by_hand() -> None:
    line = np.stack([np.arange(10.0), np.zeros(10)], axis=1)  # (10, 2) points on a line
    alternating = np.arange(10) % 2
    # inner points: both nearest neighbours carry the other label; the two ends: one of two
    assert label_agreement(line, alternating, num_neighbours=2) == pytest.approx(0.1)
    assert label_agreement(line, (np.arange(10) >= 5).astype(int), num_neighbours=2) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="more than 5 points"):
        label_agreement(line[:5], alternating[:5])


def test_tsne_keeps_separated_clusters_apart() -> None:
    features, labels = clusters()
    embedding = embed_2d(features, labels, EmbeddingOptions(perplexity=10.0, learning_rate=100.0))
    assert embedding.points.shape == (60, 2) and embedding.labels.tolist() == labels.tolist()
    assert embedding.kl_divergence is not None and 0 < embedding.kl_divergence < 5
    assert label_agreement(embedding.points, embedding.labels) > 0.95


def test_tsne_refuses_too_few_points_and_too_high_a_perplexity() -> None:
    features, _ = clusters(per_class=4)  # 12 points
    with pytest.raises(ValueError, match="perplexity 12.0 must be below the number of points"):
        tsne_2d(features, perplexity=12.0)
    with pytest.raises(ValueError, match="at least 5 points"):
        tsne_2d(features[:4])


@pytest.mark.parametrize(
    ("options", "message"),
    [({"method": "pca"}, "expected one of tsne, umap"), ({"perplexity": 0.0}, "perplexity must be positive"),
     ({"learning_rate": -1.0}, "positive number or 'auto'")],
)  # fmt: skip
def test_embedding_options_are_checked(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EmbeddingOptions(**options)


def test_umap_without_umap_learn_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "umap", None)  # `import umap` raises ImportError
    features, labels = clusters()
    with pytest.raises(ValueError, match="pip install umap-learn"):
        embed_2d(features, labels, EmbeddingOptions(method="umap"))


def test_umap_is_called_with_cosine_metric_and_at_most_n_minus_1_neighbours(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict] = []

    class FakeUMAP:
        def __init__(self, **kwargs: object) -> None:
            calls.append(kwargs)

        def fit_transform(self, x: np.ndarray) -> np.ndarray:
            return x[:, :2] * 2

    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=FakeUMAP))
    features, labels = clusters(num_classes=2, per_class=5)
    embedding = embed_2d(features, labels, EmbeddingOptions(method="umap", seed=3))
    assert calls == [{"n_components": 2, "n_neighbors": 9, "metric": "cosine", "random_state": 3}]
    np.testing.assert_allclose(embedding.points, features[:, :2].numpy() * 2)
    assert embedding.kl_divergence is None


def test_plot_embeddings_of_the_knn_phase_writes_one_panel_per_backbone(tmp_path: Path) -> None:
    features, labels = clusters()
    pooled = PooledFeatures(features, labels, features, labels)
    path = tmp_path / "plots" / "tsne.png"
    plot_embeddings({"pretrained": pooled, "random_init": pooled}, ["a", "b", "c"], path, num_points=30)
    assert path.read_bytes().startswith(b"\x89PNG")
    assert plt.get_fignums() == []


def test_learning_rate_argument() -> None:
    assert learning_rate_type("auto") == "auto"
    assert learning_rate_type("200") == 200.0
    for bad in ("0", "fast"):
        with pytest.raises(argparse.ArgumentTypeError, match="positive number or 'auto'"):
            learning_rate_type(bad)

"""t-SNE maps of embeddings coloured by label (van der Maaten & Hinton 2008)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.manifold import TSNE
from torch import Tensor

from pretrainlab.eval.pooled_features import PooledFeatures


def tsne_2d(features: Tensor, seed: int = 0) -> np.ndarray:
    """(N, D) features -> (N, 2) t-SNE coordinates (cosine metric, PCA init)."""
    if len(features) < 5:
        raise ValueError(f"t-SNE needs at least 5 points, got {len(features)}")
    perplexity = min(30.0, (len(features) - 1) / 3)
    tsne = TSNE(n_components=2, perplexity=perplexity, metric="cosine", init="pca", random_state=seed)
    return tsne.fit_transform(features.float().numpy())


def plot_tsne_panels(
    panels: dict[str, tuple[Tensor, Tensor]], class_names: list[str], path: Path, seed: int = 0
) -> None:
    """One t-SNE scatter per named (features (N, D), labels (N,)) pair, side by side."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.6), squeeze=False)
    cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    for ax, (title, (features, labels)) in zip(axes[0], panels.items()):
        points = tsne_2d(features, seed)
        for index, name in enumerate(class_names):
            chosen = labels.numpy() == index
            ax.scatter(points[chosen, 0], points[chosen, 1], s=6, color=cmap(index % cmap.N), label=name)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][-1].legend(markerscale=3, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_embeddings(features: dict[str, PooledFeatures], class_names: list[str], path: Path,
                    num_points: int = 600) -> None:  # fmt: skip
    """t-SNE of about `num_points` evenly spaced val features of each backbone, coloured by class."""
    panels = {}
    for name, f in features.items():
        step = max(1, len(f.val) // num_points)
        panels[f"{name.replace('_', ' ')} (t-SNE)"] = (f.val[::step], f.val_labels[::step])
    plot_tsne_panels(panels, class_names, path)

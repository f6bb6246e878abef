"""2-D maps of pooled embeddings coloured by label: t-SNE (van der Maaten & Hinton 2008) or UMAP
(McInnes et al. 2018; the optional package umap-learn).

`pretrainlab analyze embeddings --run DIR` maps the pooled features of `--num-points` evenly spaced val
images of the run's pretrained and / or random-init backbone -> plots/embeddings_<method>.png and
analysis/embeddings_<method>.md. The study's kNN phase draws its t-SNE with `plot_embeddings`.

Besides t-SNE's final KL divergence, the section reports how well each map keeps the classes apart:
the share of a point's 5 nearest neighbours in the 2-D map that carry its label.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Literal

import numpy as np
from matplotlib import colormaps
from sklearn.manifold import TSNE
from sklearn.neighbors import NearestNeighbors
from torch import Tensor

from pretrainlab.analysis.run_analysis import (
    WEIGHTS,
    AnalysisSection,
    add_run_argument,
    add_weights_argument,
    evenly_spaced,
    figure_path,
    positive_int,
    prepare_run,
    saved_figure,
)
from pretrainlab.eval.pooled_features import PooledFeatures

if TYPE_CHECKING:
    from pretrainlab.analysis.probed_model import Weights

log = logging.getLogger(__name__)

METHOD_TITLES = {"tsne": "t-SNE", "umap": "UMAP"}
NUM_NEIGHBOURS = 5  # neighbours of the label-agreement score


@dataclass(frozen=True)
class EmbeddingOptions:
    """How (N, D) features become (N, 2) points.

    Attributes:
        method: `tsne` or `umap` (needs umap-learn).
        perplexity: t-SNE perplexity; None = min(30, (N - 1) / 3).
        learning_rate: t-SNE learning rate, or "auto" (scikit-learn's max(N / 12 / 4, 50)).
        seed: random state of t-SNE / UMAP.
    """

    method: Literal["tsne", "umap"] = "tsne"
    perplexity: float | None = None
    learning_rate: float | Literal["auto"] = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHOD_TITLES:
            known = ", ".join(METHOD_TITLES)
            raise ValueError(f"embedding method {self.method!r} is not known; expected one of {known}")
        if self.perplexity is not None and self.perplexity <= 0:
            raise ValueError(f"perplexity must be positive, got {self.perplexity}")
        is_positive = isinstance(self.learning_rate, float | int) and self.learning_rate > 0
        if self.learning_rate != "auto" and not is_positive:
            raise ValueError(f"learning_rate must be a positive number or 'auto', got {self.learning_rate!r}")


@dataclass(frozen=True)
class EmbeddingMap:
    """points (N, 2), labels (N,), and t-SNE's final KL(P || Q) (None for UMAP)."""

    points: np.ndarray
    labels: np.ndarray
    kl_divergence: float | None


def import_umap() -> ModuleType:
    """The `umap` module of umap-learn, or a ValueError saying how to get it."""
    try:
        import umap
    except ImportError:
        raise ValueError("embedding method 'umap' needs the optional package umap-learn, which is not installed "
                         "(pip install umap-learn); method 'tsne' needs nothing extra") from None  # fmt: skip
    return umap


def tsne_2d(features: Tensor, *, perplexity: float | None = None, learning_rate: float | str = "auto",
            seed: int = 0) -> tuple[np.ndarray, float]:  # fmt: skip
    """(N, D) features -> (N, 2) t-SNE coordinates (cosine metric, PCA init) and the final KL divergence."""
    num_points = len(features)
    if num_points < 5:
        raise ValueError(f"t-SNE needs at least 5 points, got {num_points}")
    if perplexity is None:
        perplexity = min(30.0, (num_points - 1) / 3)
    elif perplexity >= num_points:
        raise ValueError(f"t-SNE perplexity {perplexity} must be below the number of points ({num_points})")
    tsne = TSNE(n_components=2, perplexity=perplexity, learning_rate=learning_rate, metric="cosine", init="pca",
                random_state=seed)  # fmt: skip
    points = tsne.fit_transform(features.float().numpy())
    return points, float(tsne.kl_divergence_)


def umap_2d(features: Tensor, *, seed: int = 0) -> np.ndarray:
    """(N, D) features -> (N, 2) UMAP coordinates (cosine metric, up to 15 neighbours)."""
    umap = import_umap()
    num_points = len(features)
    if num_points < 3:
        raise ValueError(f"UMAP needs at least 3 points, got {num_points}")
    reducer = umap.UMAP(n_components=2, n_neighbors=min(15, num_points - 1), metric="cosine", random_state=seed)
    return np.asarray(reducer.fit_transform(features.float().numpy()))


def embed_2d(features: Tensor, labels: Tensor, options: EmbeddingOptions) -> EmbeddingMap:
    """(N, D) features and (N,) labels -> their 2-D map by `options.method`."""
    if options.method == "umap":
        return EmbeddingMap(umap_2d(features, seed=options.seed), labels.numpy(), None)
    points, kl_divergence = tsne_2d(features, perplexity=options.perplexity, learning_rate=options.learning_rate,
                                    seed=options.seed)  # fmt: skip
    return EmbeddingMap(points, labels.numpy(), kl_divergence)


def label_agreement(points: np.ndarray, labels: np.ndarray, num_neighbours: int = NUM_NEIGHBOURS) -> float:
    """Mean share of each point's `num_neighbours` nearest other points (Euclidean, in (N, 2) `points`)
    that carry its label: 1 when every class is its own island, about 1 / K for K mixed classes."""
    if len(points) <= num_neighbours:
        raise ValueError(f"label agreement with {num_neighbours} neighbours needs more than {num_neighbours} "
                         f"points, got {len(points)}")  # fmt: skip
    neighbours = NearestNeighbors(n_neighbors=num_neighbours).fit(points).kneighbors(return_distance=False)  # (N, k)
    return float((labels[neighbours] == labels[:, None]).mean())


def plot_maps(maps: dict[str, EmbeddingMap], class_names: list[str], path: Path) -> None:
    """One scatter per named map, side by side, coloured by class, one legend."""
    with saved_figure(path, 1, len(maps), figsize=(5 * len(maps), 4.6)) as (_, axes):
        cmap = colormaps["tab10" if len(class_names) <= 10 else "tab20"]
        for ax, (title, embedding) in zip(axes[0], maps.items()):
            for index, name in enumerate(class_names):
                chosen = embedding.labels == index
                ax.scatter(embedding.points[chosen, 0], embedding.points[chosen, 1], s=6, color=cmap(index % cmap.N),
                           label=name)  # fmt: skip
            ax.set_title(title)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0][-1].legend(markerscale=3, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))


def plot_embeddings(features: dict[str, PooledFeatures], class_names: list[str], path: Path,
                    num_points: int = 600) -> None:  # fmt: skip
    """t-SNE of `num_points` evenly spaced val features of each backbone, coloured by class."""
    maps = {}
    for name, f in features.items():
        chosen = evenly_spaced(len(f.val), num_points)
        maps[f"{name.replace('_', ' ')} (t-SNE)"] = embed_2d(f.val[chosen], f.val_labels[chosen], EmbeddingOptions())
    plot_maps(maps, class_names, path)


def val_pooled_features(run_dir: Path, weights: Weights, num_points: int) -> tuple[Tensor, Tensor, list[str]]:
    """Pooled features (N, D) and labels (N,) of `num_points` evenly spaced val images, and the class names."""
    from torch.utils.data import DataLoader, Subset

    from pretrainlab.analysis.probed_model import load_backbone
    from pretrainlab.data.loaders import build_eval_loaders
    from pretrainlab.eval.knn import extract_features

    config, backbone = load_backbone(run_dir, weights)
    dataset = build_eval_loaders(config)[1].dataset
    subset = Subset(dataset, evenly_spaced(len(dataset), num_points))
    loader = DataLoader(subset, batch_size=config.data.eval_batch_size, num_workers=config.data.num_workers)
    features, labels = extract_features(lambda images: backbone(images).pooled, loader, "cpu", gather=False)
    return features, labels, list(dataset.classes)


def analyze_embeddings(run_dir: Path, weights: Sequence[Weights], options: EmbeddingOptions,
                       num_points: int = 600) -> AnalysisSection:  # fmt: skip
    """2-D maps of the pooled val features of each of `weights` -> plots/embeddings_<method>.png; the section."""
    if options.method == "umap":
        import_umap()  # fail before loading anything
    prepare_run(run_dir)
    name, method_title = f"embeddings_{options.method}", METHOD_TITLES[options.method]
    maps, numbers = {}, {}
    class_names: list[str] = []
    for weight in weights:
        features, labels, class_names = val_pooled_features(run_dir, weight, num_points)
        embedding = embed_2d(features, labels, options)
        maps[f"{weight.replace('_', ' ')} ({method_title})"] = embedding
        numbers[f"{weight}: points"] = str(len(features))
        num_neighbours = min(NUM_NEIGHBOURS, len(features) - 1)
        agreement = label_agreement(embedding.points, embedding.labels, num_neighbours)
        numbers[f"{weight}: {num_neighbours}-NN label agreement in the map"] = f"{agreement:.3f}"
        if embedding.kl_divergence is not None:
            numbers[f"{weight}: t-SNE KL divergence"] = f"{embedding.kl_divergence:.3f}"
    plot_maps(maps, class_names, figure_path(run_dir, name))
    used: dict[str, object] = {"method": options.method, "weights": ", ".join(weights), "num_points": num_points,
                               "seed": options.seed}  # fmt: skip
    if options.method == "tsne":
        used["perplexity"] = options.perplexity if options.perplexity is not None else "min(30, (N - 1) / 3)"
        used["learning_rate"] = options.learning_rate
    return AnalysisSection(name, f"Embeddings ({method_title}) of the pooled val features", used, numbers)


def learning_rate_type(text: str) -> float | str:
    """argparse type: a positive number or 'auto'."""
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'auto', got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'auto', got {value}")
    return value


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_argument(parser)
    parser.add_argument("--method", choices=tuple(METHOD_TITLES), default="tsne",
                        help="tsne (default) or umap (needs the optional package umap-learn)")  # fmt: skip
    parser.add_argument("--perplexity", type=float, help="t-SNE perplexity (default: min(30, (N - 1) / 3))")
    parser.add_argument("--learning-rate", type=learning_rate_type, default="auto",
                        help="t-SNE learning rate or 'auto' (default)")  # fmt: skip
    parser.add_argument("--num-points", type=positive_int, default=600, help="evenly spaced val images mapped")
    parser.add_argument("--seed", type=int, default=0, help="random state of t-SNE / UMAP")
    add_weights_argument(parser, (*WEIGHTS, "both"), default="both")


def run_cli(args: argparse.Namespace) -> int:
    options = EmbeddingOptions(method=args.method, perplexity=args.perplexity, learning_rate=args.learning_rate,
                               seed=args.seed)  # fmt: skip
    weights = WEIGHTS if args.weights == "both" else (args.weights,)
    section = analyze_embeddings(args.run, weights, options, args.num_points)
    section_file = section.write(args.run)
    log.info("wrote %s and %s", figure_path(args.run, section.name), section_file)
    return 0

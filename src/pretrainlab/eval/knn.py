"""Weighted k-nearest-neighbour classifier on frozen features.

Wu et al. 2018, "Unsupervised Feature Learning via Non-Parametric Instance
Discrimination", as used in DINO's `eval_knn.py` (Caron et al. 2021): features are
L2-normalised, the k most cosine-similar training samples each add exp(sim / T) to
their class, and classes are ranked by the summed votes.

Scores: top-1 / top-5 as DINO counts them (the top-5 over the first min(5, k, C) ranked classes),
and macro precision / recall / F1 with scikit-learn's semantics (`average="macro"`,
`zero_division=0`, the `labels` being the union of the true and the predicted classes, its
default). The macro average runs over the classes that occur in the labels or the predictions:
a class in the labels but never predicted counts with precision = recall = F1 = 0, a predicted
class absent from the labels also counts with 0 (its predictions are all wrong), and a class in
neither (e.g. one missing from a val subset that nobody predicts) is left out rather than
averaged in as 0.

Neighbours: `knn_search.nearest_neighbours`, exact (float64 similarities of the fp32-normalised
features, ties to the lower bank index), screened by a bf16 matmul with a proven error bound.
Memory: queries and training bank are processed in blocks with running candidates, so the
similarity block held at once takes at most chunk_size x train_chunk_size x 4 bytes (64 MB at
the defaults; see `nearest_neighbours` for the block shapes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from pretrainlab.distributed import all_gather_no_grad
from pretrainlab.eval.knn_search import nearest_neighbours

logger = logging.getLogger(__name__)


def _check_bank(train_features: Tensor, train_labels: Tensor, test_features: Tensor, num_classes: int) -> None:
    if train_features.ndim != 2 or test_features.ndim != 2 or train_features.shape[1] != test_features.shape[1]:
        raise ValueError(
            f"expected train_features (N, D) and test_features (M, D) with the same D, got "
            f"{tuple(train_features.shape)} and {tuple(test_features.shape)}"
        )
    if train_features.shape[0] == 0:
        raise ValueError("train_features is empty; the kNN bank needs at least one sample")
    if train_labels.shape != (train_features.shape[0],) or train_labels.is_floating_point():
        raise ValueError(
            f"expected integer train_labels of shape ({train_features.shape[0]},), got "
            f"{train_labels.dtype} {tuple(train_labels.shape)}"
        )
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if int(train_labels.min()) < 0 or int(train_labels.max()) >= num_classes:
        raise ValueError(
            f"train_labels must lie in [0, {num_classes}), got min {int(train_labels.min())} "
            f"and max {int(train_labels.max())}"
        )


def _votes(sims: Tensor, neighbour_labels: Tensor, temperature: float, num_classes: int) -> Tensor:
    """(M, k) similarities and labels -> (M, C) summed exp(sim / T) per class."""
    votes = sims.new_zeros((sims.shape[0], num_classes))
    return votes.scatter_add_(1, neighbour_labels, (sims / temperature).exp())


def knn_predict(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    *,
    k: int,
    temperature: float = 0.07,
    num_classes: int,
    chunk_size: int = 1024,
    train_chunk_size: int = 16384,
) -> Tensor:
    """Weighted kNN class votes (Wu et al. 2018; DINO `knn_classifier`).

    Args:
        train_features: (N, D) bank features (normalised inside).
        train_labels: (N,) integer labels in [0, C).
        test_features: (M, D) query features (normalised inside).
        k: number of neighbours, clipped to N.
        temperature: T of the exp(sim / T) weights.
        num_classes: C, the number of vote columns.
        chunk_size: queries per block (with train_chunk_size, the memory bound in the module docstring).
        train_chunk_size: bank rows per block.

    Returns:
        (M, C) float32 votes.
    """
    _check_bank(train_features, train_labels, test_features, num_classes)
    if k < 1 or temperature <= 0:
        raise ValueError(f"expected k >= 1 and temperature > 0, got k={k}, temperature={temperature}")
    k = min(k, train_features.shape[0])
    found = nearest_neighbours(train_features, test_features, k, chunk_size, train_chunk_size)
    return _votes(found.sims, train_labels.to(found.indices.device)[found.indices], temperature, num_classes)


@dataclass(frozen=True)
class KNNScores:
    """Scores of one k. Percentages for top1/top5, fractions for the macro averages (over the classes in the
    labels or the predictions)."""

    k: int
    top1: float
    top5: float
    precision: float
    recall: float
    f1: float
    pred: Tensor  # (M,) predicted class
    confusion: Tensor  # (C, C) int64, rows = true class, columns = predicted class


@dataclass(frozen=True)
class KNNResult:
    """Scores of the primary k (attributes forwarded) and of every evaluated k in `per_k`."""

    primary: KNNScores
    per_k: dict[int, KNNScores]

    top1 = property(lambda self: self.primary.top1)
    top5 = property(lambda self: self.primary.top5)
    precision = property(lambda self: self.primary.precision)
    recall = property(lambda self: self.primary.recall)
    f1 = property(lambda self: self.primary.f1)
    pred = property(lambda self: self.primary.pred)
    confusion = property(lambda self: self.primary.confusion)

    def as_metrics(self) -> dict[str, float]:
        """Flat numbers for logging: `knn_top1` ... for the primary k, `knn_top1_k<k>` ... for each k."""
        names = ("top1", "top5", "precision", "recall", "f1")
        metrics = {f"knn_{name}": float(getattr(self.primary, name)) for name in names}
        for k, scores in self.per_k.items():
            metrics |= {f"knn_{name}_k{k}": float(getattr(scores, name)) for name in names}
        return metrics


def _macro_scores(confusion: Tensor) -> tuple[float, float, float]:
    """Macro precision, recall, F1 of a (C_true, C_pred) confusion matrix over the classes seen in the labels
    or the predictions (see the module docstring); F1 is the mean of the per-class F1."""
    confusion = confusion.double()
    true_positive = confusion.diagonal()
    predicted = confusion.sum(dim=0)
    actual = confusion.sum(dim=1)
    present = (predicted + actual) > 0
    precision = torch.where(predicted > 0, true_positive / predicted.clamp(min=1), 0.0)
    recall = torch.where(actual > 0, true_positive / actual.clamp(min=1), 0.0)
    denominator = precision + recall
    f1 = torch.where(denominator > 0, 2 * precision * recall / denominator.clamp(min=1e-300), 0.0)
    return tuple(float(values[present].mean()) for values in (precision, recall, f1))  # type: ignore[return-value]


def _scores(k: int, votes: Tensor, test_labels: Tensor, num_classes: int) -> KNNScores:
    """Rank the classes of (M, C) votes; top5 uses the first min(5, k, C) ranked classes."""
    num_test = votes.shape[0]
    ranked = votes.topk(min(5, k, num_classes), dim=1).indices  # (M, <= 5)
    correct = ranked == test_labels[:, None]
    pred = votes.argmax(dim=1)
    confusion = torch.bincount(test_labels * num_classes + pred, minlength=num_classes * num_classes)
    confusion = confusion.view(num_classes, num_classes)  # (C_true, C_pred)
    precision, recall, f1 = _macro_scores(confusion)
    return KNNScores(
        k=k,
        top1=int(correct[:, 0].sum()) * 100.0 / num_test,
        top5=int(correct.any(dim=1).sum()) * 100.0 / num_test,
        precision=precision,
        recall=recall,
        f1=f1,
        pred=pred,
        confusion=confusion,
    )


def knn_classify(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    *,
    k: int = 20,
    ks: Sequence[int] = (10, 20, 100, 200),
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 1024,
    train_chunk_size: int = 16384,
) -> KNNResult:
    """Weighted kNN accuracy (top1/top5 %), macro precision/recall/F1 and confusion matrix.

    The neighbours are searched once for the largest k; every k in `ks` (and the primary
    `k`) is clipped to N and scored from the nearest prefix.

    Args:
        train_features: (N, D) bank features.
        train_labels: (N,) integer labels.
        test_features: (M, D) query features, M >= 1.
        test_labels: (M,) integer labels.
        k: primary k (20 in DINO).
        ks: further k values to score.
        temperature: T of the vote weights.
        num_classes: C; default max label + 1.
        chunk_size: queries per block (with train_chunk_size, the memory bound in the module docstring).
        train_chunk_size: bank rows per block.
    """
    if test_labels.shape != (test_features.shape[0],) or test_labels.is_floating_point() or len(test_labels) == 0:
        raise ValueError(
            f"expected non-empty integer test_labels of shape ({test_features.shape[0]},), got "
            f"{test_labels.dtype} {tuple(test_labels.shape)}"
        )
    if num_classes is None:
        num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    _check_bank(train_features, train_labels, test_features, num_classes)
    if int(test_labels.min()) < 0 or int(test_labels.max()) >= num_classes:
        raise ValueError(f"test_labels must lie in [0, {num_classes}), got max {int(test_labels.max())}")
    if min((k, *ks)) < 1 or temperature <= 0:
        raise ValueError(f"expected every k >= 1 and temperature > 0, got k={k}, ks={tuple(ks)}, T={temperature}")
    num_train = train_features.shape[0]
    primary_k = min(k, num_train)
    all_ks = sorted({min(value, num_train) for value in (*ks, k)})
    found = nearest_neighbours(train_features, test_features, all_ks[-1], chunk_size, train_chunk_size)
    neighbour_labels = train_labels.to(found.indices.device)[found.indices]  # (M, k_max)
    test_labels = test_labels.to(found.indices.device).long()
    per_k = {}
    for value in all_ks:
        votes = _votes(found.sims[:, :value], neighbour_labels[:, :value], temperature, num_classes)
        per_k[value] = _scores(value, votes, test_labels, num_classes)
        logger.info("kNN k=%d: top1 %.2f  top5 %.2f", value, per_k[value].top1, per_k[value].top5)
    return KNNResult(primary=per_k[primary_k], per_k=per_k)


def extract_features(
    model_fn: Callable[[Tensor], Tensor], loader: Iterable, device: torch.device | str, *, gather: bool = True
) -> tuple[Tensor, Tensor]:
    """Run `model_fn` over `loader` under `torch.inference_mode()`.

    Args:
        model_fn: images (B, C, H, W) -> features (B, D); put the model in eval mode first.
        loader: yields (images, labels, ...) batches.
        device: where the images are sent.
        gather: when distributed, concatenate the features and labels of all ranks (rank order).

    Returns:
        features (N, D) float32 and labels (N,) int64, on the CPU.
    """
    features, labels = [], []
    with torch.inference_mode():
        for batch in loader:
            if not isinstance(batch, (list, tuple)) or len(batch) < 2:
                raise ValueError(f"expected loader batches (images, labels, ...), got {type(batch).__name__}")
            images, batch_labels = batch[0], batch[1]
            output = model_fn(images.to(device, non_blocking=True))
            if output.ndim != 2 or output.shape[0] != images.shape[0]:
                raise ValueError(f"model_fn must return (B, D) features, got {tuple(output.shape)} for B={len(images)}")
            features.append(output.float().cpu())
            labels.append(torch.as_tensor(batch_labels).long().cpu())
    if not features:
        raise ValueError("the loader yielded no batches")
    all_features, all_labels = torch.cat(features), torch.cat(labels)
    if gather:
        all_features, all_labels = all_gather_no_grad(all_features), all_gather_no_grad(all_labels)
    return all_features, all_labels

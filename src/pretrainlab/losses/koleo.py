"""KoLeo regulariser: the Kozachenko-Leonenko differential entropy estimator.

Sablayrolles et al. 2019, "Spreading vectors for similarity search"; used on the
class tokens of each global crop in DINOv2 (Oquab et al. 2023). It pushes every
L2-normalised feature away from its nearest neighbour in the batch:
loss = -mean_i log(||x_i - x_nn(i)|| + eps).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def koleo_loss(features: Tensor, eps: float = 1e-8) -> Tensor:
    """KoLeo loss of a batch of features (Sablayrolles et al. 2019).

    Rows are L2-normalised (x / max(||x||, eps)); the neighbour of row i is the row j != i
    with the largest dot product (chosen without gradient). The diagonal is excluded with
    -inf: DINOv2 sets it to -1, so for two antipodal rows (+-e1) it picks the row itself;
    here +-e1 gives -log 2 as the estimator intends. The distance is
    ||x_i - x_j + eps|| (torch's PairwiseDistance puts eps inside the norm, which keeps the
    gradient finite for identical rows); loss = -mean_i log(d_i + eps).

    Args:
        features: (N, D) features, N >= 2, not necessarily normalised.
        eps: numerical guard used in the normalisation, the distance and the log.

    Returns:
        Scalar loss.
    """
    if features.ndim != 2:
        raise ValueError(f"koleo_loss expects features (N, D), got shape {tuple(features.shape)}")
    num = features.shape[0]
    if num < 2:
        raise ValueError(
            f"koleo_loss needs at least 2 rows to find a nearest neighbour, got shape {tuple(features.shape)}"
        )
    normed = F.normalize(features, p=2.0, dim=-1, eps=eps)  # (N, D)
    with torch.no_grad():
        dots = normed @ normed.T  # (N, N)
        dots.fill_diagonal_(float("-inf"))  # DINOv2 writes -1, which ties with an antipodal row
        neighbour = dots.argmax(dim=1)  # (N,)
    distances = torch.linalg.vector_norm(normed - normed[neighbour] + eps, ord=2, dim=-1)  # (N,)
    return -torch.log(distances + eps).mean()


def koleo_per_crop(features: Tensor, num_crops: int, eps: float = 1e-8) -> Tensor:
    """Mean of `koleo_loss` over crops, so two views of one image are never neighbours.

    Args:
        features: (G*B, D) features; crop g occupies rows [g*B, (g+1)*B).
        num_crops: G.
        eps: see `koleo_loss`.

    Returns:
        Scalar: mean over the G crops of the KoLeo loss of each (B, D) block.
    """
    if features.ndim != 2:
        raise ValueError(f"koleo_per_crop expects features (G*B, D), got shape {tuple(features.shape)}")
    if num_crops < 1 or features.shape[0] % num_crops != 0:
        raise ValueError(
            f"features has {features.shape[0]} rows, expected a multiple of num_crops={num_crops} (>= 1)"
        )
    blocks = features.reshape(num_crops, features.shape[0] // num_crops, features.shape[1])  # (G, B, D)
    return torch.stack([koleo_loss(block, eps) for block in blocks]).mean()


class KoLeoLoss(nn.Module):
    """KoLeo loss module; with `num_crops > 1` it is applied per crop block and averaged.

    Args:
        num_crops: number of crop blocks G in the (G*B, D) input (1: the whole batch at once).
        eps: see `koleo_loss`.
    """

    def __init__(self, num_crops: int = 1, eps: float = 1e-8) -> None:
        super().__init__()
        if num_crops < 1:
            raise ValueError(f"num_crops must be >= 1, got {num_crops}")
        self.num_crops = num_crops
        self.eps = eps

    def forward(self, features: Tensor) -> Tensor:
        """(G*B, D) features -> scalar loss."""
        if self.num_crops == 1:
            return koleo_loss(features, self.eps)
        return koleo_per_crop(features, self.num_crops, self.eps)

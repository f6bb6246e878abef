"""Supervised contrastive loss (SupCon) and NT-Xent / InfoNCE, its two-view unsupervised case.

Khosla et al. 2020, "Supervised Contrastive Learning" (arXiv:2004.11362, eq. 2, L^sup_out);
without labels, Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual
Representations" (SimCLR, NT-Xent).

`supcon_loss` follows SupContrast's `SupConLoss` (github.com/HobbitLong/SupContrast,
`losses.py` at 66a8fe5, the version with the "nan loss" fix). The B samples of V views
each are laid out view-major, contrast row v*N + n = view v of sample n (N = global batch
size). With `contrast_mode="all"` every local contrast row is an anchor, with `"one"` only
view 0 of each local sample. Each anchor i is compared with every contrast row a != i;
its positives P(i) are the other rows with the same label (the other views of the same
sample when `labels` is None). Per anchor:
    l_i = -(T / T_base) * 1/|P(i)| * sum_{p in P(i)} log( exp(s_ip / T) / sum_{a != i} exp(s_ia / T) )
with dot products s of the features as given. An anchor without a positive (a label seen
once, V = 1) has l_i = 0 and still counts in the mean, as in the fixed original: the loss
is never NaN. The loss is the mean of l_i over the local anchors.

Deliberate difference from the original: the denominator is an exact `logsumexp`. The
original adds 1e-9 to the sum of exp(logit - row max); that shifts an anchor's
log-probabilities by about 1e-9 * exp(gap / T), gap = the row's largest similarity
(itself, for unit features) minus its largest similarity to another row: below 1e-5 for
gap < 9 T, e.g. any other row with cosine > 0.37 at T = 0.07.

`info_nce_loss` is `supcon_loss` with V = 2, cosine similarity (the embeddings are
normalised first) and T_base = T.

Distributed: each rank averages over its own anchors against the contrast rows gathered
from all ranks; the gradient flows to the other ranks' features through
`all_gather_with_grad`, so the DDP-averaged gradient is that of the loss over the
concatenated global batch (for equal per-rank batches).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pretrainlab.distributed import (
    all_gather_no_grad,
    all_gather_with_grad,
    is_distributed,
    rank,
)

CONTRAST_MODES = ("all", "one")


def _check_temperature(name: str, value: float) -> None:
    if not value > 0:  # also catches NaN
        raise ValueError(f"{name} must be > 0, got {value}")


def _check_labels(labels: Tensor | None, batch: int) -> None:
    if labels is not None and (labels.shape != (batch,) or labels.is_floating_point() or labels.is_complex()):
        raise ValueError(f"expected integer labels of shape ({batch},), got {labels.dtype} {tuple(labels.shape)}")


def _check_inputs(z_a: Tensor, z_b: Tensor, temperature: float, labels: Tensor | None) -> None:
    if z_a.ndim != 2 or z_a.shape != z_b.shape:
        raise ValueError(
            f"expected z_a and z_b of the same shape (B, D), got z_a {tuple(z_a.shape)} and z_b {tuple(z_b.shape)}"
        )
    if z_a.shape[0] < 1:
        raise ValueError(f"expected at least one sample, got z_a {tuple(z_a.shape)}")
    _check_temperature("temperature", temperature)
    _check_labels(labels, z_a.shape[0])


def _check_supcon_inputs(
    features: Tensor, labels: Tensor | None, temperature: float, base_temperature: float, contrast_mode: str
) -> None:
    if features.ndim != 3 or 0 in features.shape or not features.is_floating_point():
        raise ValueError(
            f"expected floating features of shape (B, V, D) with B, V, D >= 1, got {features.dtype} "
            f"{tuple(features.shape)}"
        )
    _check_temperature("temperature", temperature)
    _check_temperature("base_temperature", base_temperature)
    if contrast_mode not in CONTRAST_MODES:
        raise ValueError(f"contrast_mode must be one of {', '.join(CONTRAST_MODES)}; got {contrast_mode!r}")
    _check_labels(labels, features.shape[0])


def _global_offset(local_rows: int, device: torch.device) -> int:
    """Index of this rank's first row in the gathered batch."""
    sizes = all_gather_no_grad(torch.tensor([local_rows], device=device))  # (world,)
    return int(sizes[: rank()].sum().item())


def supcon_loss(
    features: Tensor,
    labels: Tensor | None = None,
    *,
    temperature: float = 0.07,
    base_temperature: float = 0.07,
    contrast_mode: Literal["all", "one"] = "all",
    gather: bool = True,
) -> Tensor:
    """SupCon (Khosla et al. 2020, eq. 2), or SimCLR's NT-Xent when `labels` is None.

    Args:
        features: (B, V, D) V views of B samples, used as given (normalise them first for
            cosine similarity).
        labels: optional (B,) integer class labels; None makes each sample its own class.
        temperature: T > 0 of the softmax.
        base_temperature: T_base > 0; the loss is scaled by T / T_base.
        contrast_mode: "all" (every view is an anchor) or "one" (view 0 only).
        gather: take the contrast rows from the batch gathered over all ranks (only
            matters when a process group is initialised).

    Returns:
        Scalar loss: mean over the V*B ("all") or B ("one") local anchors.
    """
    _check_supcon_inputs(features, labels, temperature, base_temperature, contrast_mode)
    batch, num_views, _ = features.shape
    device = features.device
    use_gather = gather and is_distributed()
    offset = _global_offset(batch, device) if use_gather else 0
    everyone = all_gather_with_grad(features) if use_gather else features  # (N, V, D)
    total = everyone.shape[0]
    if num_views * total < 2:
        raise ValueError(f"need at least two contrast rows, got features {tuple(features.shape)} over all ranks")
    sample_ids = torch.arange(offset, offset + batch, device=device)  # (B,) rows of the local samples
    if labels is None:
        local_keys, all_keys = sample_ids, torch.arange(total, device=device)
    else:
        local_keys, all_keys = labels, (all_gather_no_grad(labels) if use_gather else labels)

    anchor_views = num_views if contrast_mode == "all" else 1
    contrast = everyone.transpose(0, 1).reshape(num_views * total, -1)  # (V*N, D), view-major
    anchors = features[:, :anchor_views].transpose(0, 1).reshape(anchor_views * batch, -1)  # (A, D), A = V_a*B
    logits = anchors @ contrast.T / temperature  # (A, V*N)
    view_starts = torch.arange(anchor_views, device=device) * total  # (V_a,)
    self_columns = (view_starts[:, None] + sample_ids[None, :]).reshape(-1)  # (A,) column of each anchor itself
    is_self = torch.zeros_like(logits, dtype=torch.bool)
    is_self[torch.arange(len(self_columns), device=device), self_columns] = True
    anchor_keys = local_keys.repeat(anchor_views)  # (A,)
    contrast_keys = all_keys.repeat(num_views)  # (V*N,)
    is_positive = (anchor_keys[:, None] == contrast_keys[None, :]) & ~is_self  # (A, V*N)

    log_prob = logits - torch.logsumexp(logits.masked_fill(is_self, float("-inf")), dim=1, keepdim=True)
    positive_log_prob = log_prob.masked_fill(~is_positive, 0.0).sum(dim=1)  # (A,)
    num_positives = is_positive.sum(dim=1).clamp(min=1)  # an anchor without positive gives 0 / 1
    return -(temperature / base_temperature) * (positive_log_prob / num_positives).mean()


def info_nce_loss(
    z_a: Tensor,
    z_b: Tensor,
    temperature: float,
    *,
    labels: Tensor | None = None,
    gather: bool = True,
) -> Tensor:
    """NT-Xent (SimCLR, Chen et al. 2020), or SupCon (Khosla et al. 2020) when `labels` is given.

    Args:
        z_a: (B, D) embeddings of the first view (any scale; cosine similarity is used).
        z_b: (B, D) embeddings of the second view, row i is the same sample as z_a[i].
        temperature: T > 0.
        labels: optional (B,) integer class labels; every other embedding with the same
            label is a positive.
        gather: take the candidates from the batch gathered over all ranks (only matters
            when a process group is initialised).

    Returns:
        Scalar loss: mean over the 2B local anchors.
    """
    _check_inputs(z_a, z_b, temperature, labels)
    views = torch.stack([F.normalize(z_a, dim=-1), F.normalize(z_b, dim=-1)], dim=1)  # (B, 2, D)
    return supcon_loss(views, labels, temperature=temperature, base_temperature=temperature, gather=gather)


class InfoNCELoss(nn.Module):
    """Module form of `info_nce_loss`.

    Args:
        temperature: T > 0 (SimCLR uses 0.1 to 0.5).
        gather: take the candidates from all ranks when distributed.
    """

    def __init__(self, temperature: float = 0.1, gather: bool = True) -> None:
        super().__init__()
        _check_temperature("temperature", temperature)
        self.temperature = temperature
        self.gather = gather

    def forward(self, z_a: Tensor, z_b: Tensor, labels: Tensor | None = None) -> Tensor:
        """(B, D), (B, D) [, labels (B,)] -> scalar loss."""
        return info_nce_loss(z_a, z_b, self.temperature, labels=labels, gather=self.gather)

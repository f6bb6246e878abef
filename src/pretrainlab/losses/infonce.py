"""NT-Xent / InfoNCE contrastive loss and its supervised variant.

Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations"
(SimCLR); with labels, Khosla et al. 2020, "Supervised Contrastive Learning" (L^sup_out).

Every one of the 2B embeddings (two views of B samples) is an anchor. Its candidates are
the other 2N - 1 embeddings of the batch gathered over all ranks (N = global batch
size); its positives are the other view of the same sample or, with labels, every other
embedding with the same label. Per anchor:
    l_i = -1/|P(i)| * sum_{p in P(i)} log( exp(s_ip / T) / sum_{a != i} exp(s_ia / T) )
with cosine similarities s. The loss is the mean over the local anchors (both views,
hence symmetric). Without labels this is NT-Xent.

Distributed: each rank averages over its own anchors against the gathered candidates;
the gradient flows to the other ranks' embeddings through `all_gather_with_grad`, so
the DDP-averaged gradient is that of the loss over the concatenated global batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pretrainlab.distributed import (
    all_gather_no_grad,
    all_gather_with_grad,
    is_distributed,
    rank,
)


def _check_inputs(z_a: Tensor, z_b: Tensor, temperature: float, labels: Tensor | None) -> None:
    if z_a.ndim != 2 or z_a.shape != z_b.shape:
        raise ValueError(
            f"expected z_a and z_b of the same shape (B, D), got z_a {tuple(z_a.shape)} and z_b {tuple(z_b.shape)}"
        )
    if z_a.shape[0] < 1:
        raise ValueError(f"expected at least one sample, got z_a {tuple(z_a.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if labels is not None and (labels.shape != (z_a.shape[0],) or labels.is_floating_point() or labels.is_complex()):
        raise ValueError(f"expected integer labels of shape ({z_a.shape[0]},), got {labels.dtype} {tuple(labels.shape)}")


def _global_offset(local_rows: int, device: torch.device) -> int:
    """Index of this rank's first row in the gathered batch."""
    sizes = all_gather_no_grad(torch.tensor([local_rows], device=device))  # (world,)
    return int(sizes[: rank()].sum().item())


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
    batch = z_a.shape[0]
    z_a = F.normalize(z_a, dim=-1)
    z_b = F.normalize(z_b, dim=-1)
    use_gather = gather and is_distributed()
    if use_gather:
        offset = _global_offset(batch, z_a.device)
        all_a, all_b = all_gather_with_grad(z_a), all_gather_with_grad(z_b)  # (N, D) each
    else:
        offset = 0
        all_a, all_b = z_a, z_b
    total = all_a.shape[0]
    if labels is None:
        local_keys = torch.arange(offset, offset + batch, device=z_a.device)  # (B,) sample ids
        all_keys = torch.arange(total, device=z_a.device)  # (N,)
    else:
        local_keys = labels
        all_keys = all_gather_no_grad(labels) if use_gather else labels

    anchors = torch.cat([z_a, z_b])  # (2B, D)
    candidates = torch.cat([all_a, all_b])  # (2N, D)
    logits = anchors @ candidates.T / temperature  # (2B, 2N)
    local_rows = torch.arange(offset, offset + batch, device=z_a.device)
    self_columns = torch.cat([local_rows, local_rows + total])  # (2B,) column of each anchor itself
    is_self = torch.zeros_like(logits, dtype=torch.bool)
    is_self[torch.arange(2 * batch, device=z_a.device), self_columns] = True
    anchor_keys = torch.cat([local_keys, local_keys])  # (2B,)
    candidate_keys = torch.cat([all_keys, all_keys])  # (2N,)
    is_positive = (anchor_keys[:, None] == candidate_keys[None, :]) & ~is_self  # (2B, 2N)

    log_prob = logits - torch.logsumexp(logits.masked_fill(is_self, float("-inf")), dim=1, keepdim=True)
    positive_log_prob = log_prob.masked_fill(~is_positive, 0.0).sum(dim=1)  # (2B,)
    return -(positive_log_prob / is_positive.sum(dim=1)).mean()


class InfoNCELoss(nn.Module):
    """Module form of `info_nce_loss`.

    Args:
        temperature: T > 0 (SimCLR uses 0.1 to 0.5).
        gather: take the candidates from all ranks when distributed.
    """

    def __init__(self, temperature: float = 0.1, gather: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.gather = gather

    def forward(self, z_a: Tensor, z_b: Tensor, labels: Tensor | None = None) -> Tensor:
        """(B, D), (B, D) [, labels (B,)] -> scalar loss."""
        return info_nce_loss(z_a, z_b, self.temperature, labels=labels, gather=self.gather)

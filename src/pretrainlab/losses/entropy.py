"""Shannon entropy of softmax predictions, averaged over pixels: the objective of TENT.

Wang et al. 2021, "Tent: Fully Test-Time Adaptation by Entropy Minimization" (ICLR,
arXiv:2006.10726), Eq. 1: H(ŷ) = −Σ_k p(ŷ_k) log p(ŷ_k) with p = softmax(logits), per
prediction; the loss is its mean over the batch (the official `softmax_entropy(x).mean(0)`)
and, for segmentation, over every pixel as well (HAMLET's TENT, Colomer et al. 2023).

Computed as −Σ_k softmax(z)_k · log_softmax(z)_k, so a logit gap of 1000 gives 0 (not
0 · log 0 = NaN) and finite gradients; in at least float32, whatever the input precision.
The value lies in [0, log K]: 0 for a one-hot prediction, log K for a uniform one.
"""

from __future__ import annotations

import torch
from torch import Tensor


def softmax_entropy(logits: Tensor) -> Tensor:
    """Mean over every prediction of the entropy (in nats) of softmax(logits) along dim 1.

    Args:
        logits: (B, K, H, W) per-pixel class scores, or any (B, K, *) (e.g. (B, K) for
            classification); finite.

    Returns:
        Scalar: the mean over the B·H·W predictions of −Σ_k p_k log p_k.
    """
    if logits.ndim < 2:
        raise ValueError(f"softmax_entropy expects logits (B, K, ...), got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"softmax_entropy expects floating-point logits, got dtype {logits.dtype}")
    if logits.numel() == 0:
        raise ValueError(f"softmax_entropy got empty logits of shape {tuple(logits.shape)}")
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("softmax_entropy got non-finite logits (inf or NaN)")
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    log_probs = torch.log_softmax(logits, dim=1)  # (B, K, H, W)
    per_prediction = -(log_probs.exp() * log_probs).sum(dim=1)  # (B, H, W)
    return per_prediction.mean()

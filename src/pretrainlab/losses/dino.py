"""DINO self-distillation loss with teacher centering and sharpening.

Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers".
The teacher sees the G global crops, the student sees all V crops (the first G blocks of
its output are the same global crops). For every pair (teacher crop g, student crop v)
with v != g the loss takes the cross-entropy between the sharpened, centred teacher
distribution and the student distribution, averaged over the batch; the result is the
mean over the G*V - G pairs (G*V - G = 2*V - 2 for the usual two global crops).

Crop block layout: crop v occupies rows [v*B, (v+1)*B) of a (V*B, K) logit matrix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pretrainlab.distributed import all_reduce_sum


def teacher_probabilities(teacher_logits: Tensor, center: Tensor, teacher_temp: float) -> Tensor:
    """Centred and sharpened teacher distribution softmax((t - center) / teacher_temp), no gradient.

    Args:
        teacher_logits: (N, K) teacher head outputs.
        center: (1, K) running center.
        teacher_temp: teacher temperature (> 0), e.g. 0.04 to 0.07.

    Returns:
        (N, K) probabilities, detached.
    """
    if teacher_temp <= 0:
        raise ValueError(f"teacher_temp must be > 0, got {teacher_temp}")
    if teacher_logits.ndim != 2 or center.shape != (1, teacher_logits.shape[1]):
        raise ValueError(
            f"expected teacher_logits (N, K) and center (1, K), got teacher_logits {tuple(teacher_logits.shape)} "
            f"and center {tuple(center.shape)}"
        )
    with torch.no_grad():
        return F.softmax((teacher_logits - center) / teacher_temp, dim=-1)


def _check_shapes(student_logits: Tensor, teacher_logits: Tensor, center: Tensor, num_global: int) -> tuple[int, int]:
    """Validate the crop block layout; return (num_crops V, batch size B)."""
    if num_global < 1:
        raise ValueError(f"num_global must be >= 1, got {num_global}")
    if student_logits.ndim != 2 or teacher_logits.ndim != 2:
        raise ValueError(
            f"expected student_logits (V*B, K) and teacher_logits (G*B, K), got student_logits "
            f"{tuple(student_logits.shape)} and teacher_logits {tuple(teacher_logits.shape)}"
        )
    out_dim = student_logits.shape[1]
    if teacher_logits.shape[1] != out_dim or center.shape != (1, out_dim):
        raise ValueError(
            f"K must agree: student_logits {tuple(student_logits.shape)}, teacher_logits "
            f"{tuple(teacher_logits.shape)}, center {tuple(center.shape)} (expected center (1, {out_dim}))"
        )
    if teacher_logits.shape[0] == 0 or teacher_logits.shape[0] % num_global != 0:
        raise ValueError(
            f"teacher_logits has {teacher_logits.shape[0]} rows, "
            f"expected a positive multiple of num_global={num_global}"
        )
    batch = teacher_logits.shape[0] // num_global
    if student_logits.shape[0] % batch != 0:
        raise ValueError(
            f"student_logits has {student_logits.shape[0]} rows, expected a multiple of the batch size B={batch} "
            f"(teacher_logits {tuple(teacher_logits.shape)} holds {num_global} global crops)"
        )
    num_crops = student_logits.shape[0] // batch
    if num_crops < num_global or num_crops * num_global - num_global == 0:
        raise ValueError(
            f"student_logits {tuple(student_logits.shape)} holds {num_crops} crops of B={batch}; expected at least "
            f"num_global={num_global} crops and at least one pair of different crops"
        )
    return num_crops, batch


def dino_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    center: Tensor,
    *,
    student_temp: float,
    teacher_temp: float,
    num_global: int = 2,
) -> Tensor:
    """DINO cross-entropy between teacher and student crops (Caron et al. 2021, eq. 3).

    Args:
        student_logits: (V*B, K) student head outputs for V crops; the first `num_global`
            blocks of B rows are the global crops.
        teacher_logits: (G*B, K) teacher head outputs for the G = `num_global` global crops.
        center: (1, K) teacher center (not updated here; see `DINOLoss.update_center`).
        student_temp: student temperature (> 0), usually 0.1.
        teacher_temp: teacher temperature (> 0), usually 0.04 to 0.07.
        num_global: G, the number of global crops.

    Returns:
        Scalar loss: the mean over the G*V - G pairs (g, v), v != g, of
        mean_b sum_k -q_g[b, k] * log p_v[b, k].
    """
    if student_temp <= 0:
        raise ValueError(f"student_temp must be > 0, got {student_temp}")
    num_crops, batch = _check_shapes(student_logits, teacher_logits, center, num_global)
    out_dim = student_logits.shape[1]
    teacher_probs = teacher_probabilities(teacher_logits, center, teacher_temp)
    teacher_probs = teacher_probs.view(num_global, batch, out_dim)  # (G, B, K)
    student_log_probs = F.log_softmax(student_logits / student_temp, dim=-1)
    student_log_probs = student_log_probs.view(num_crops, batch, out_dim)  # (V, B, K)
    pair_losses = -torch.einsum("gbk,vbk->gv", teacher_probs, student_log_probs) / batch  # (G, V)
    same_crop = torch.eye(num_global, num_crops, dtype=torch.bool, device=pair_losses.device)  # (G, V)
    num_pairs = num_global * num_crops - num_global
    return pair_losses.masked_fill(same_crop, 0.0).sum() / num_pairs


class DINOLoss(nn.Module):
    """DINO loss with its teacher center as a buffer.

    `forward` never changes state; call `update_center(teacher_logits)` after the loss,
    which moves the center towards the batch mean of the teacher logits (averaged over
    all ranks when distributed): center <- m * center + (1 - m) * mean(teacher_logits).

    Args:
        out_dim: K, the head output dimension.
        student_temp: student temperature.
        center_momentum: m, momentum of the center update (0.9 in DINO).
        num_global: number of global crops G.
    """

    center: Tensor

    def __init__(
        self, out_dim: int, *, student_temp: float = 0.1, center_momentum: float = 0.9, num_global: int = 2
    ) -> None:
        super().__init__()
        if out_dim < 1:
            raise ValueError(f"out_dim must be >= 1, got {out_dim}")
        if not 0.0 <= center_momentum <= 1.0:
            raise ValueError(f"center_momentum must be in [0, 1], got {center_momentum}")
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.num_global = num_global
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, teacher_temp: float) -> Tensor:
        """(V*B, K) student and (G*B, K) teacher logits -> scalar loss; `teacher_temp` comes from its schedule."""
        return dino_loss(
            student_logits,
            teacher_logits,
            self.center,
            student_temp=self.student_temp,
            teacher_temp=teacher_temp,
            num_global=self.num_global,
        )

    @torch.no_grad()
    def update_center(self, teacher_logits: Tensor) -> None:
        """EMA of the center with the mean of `teacher_logits` (N, K) over rows and ranks."""
        if teacher_logits.ndim != 2 or teacher_logits.shape[1] != self.center.shape[1]:
            raise ValueError(
                f"expected teacher_logits (N, {self.center.shape[1]}), got {tuple(teacher_logits.shape)}"
            )
        row_sum = teacher_logits.detach().to(self.center.dtype).sum(dim=0, keepdim=True)  # (1, K)
        row_count = torch.tensor([float(teacher_logits.shape[0])], dtype=self.center.dtype, device=row_sum.device)
        total = all_reduce_sum(torch.cat([row_sum, row_count.view(1, 1)], dim=1))  # (1, K + 1)
        batch_center = total[:, :-1] / total[:, -1:]
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1.0 - self.center_momentum)

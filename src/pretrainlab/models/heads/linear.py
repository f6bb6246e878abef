"""Linear classification head: optional BatchNorm (without affine, as in MAE's linear probe), then Linear."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from pretrainlab.models.heads.base import HEADS, ClassifierHeadConfig


class LinearHead(nn.Module):
    """(B, in_dim) -> (B, num_classes) logits.

    Args:
        in_dim: feature dimension D.
        num_classes: K.
        use_bn: standardise the features with a BatchNorm1d (no affine) first
            (He et al. 2022, MAE, App. A.2: it makes the linear layer's lr scale-free).
    """

    def __init__(self, in_dim: int, num_classes: int, *, use_bn: bool = False) -> None:
        super().__init__()
        if in_dim < 1 or num_classes < 1:
            raise ValueError(f"LinearHead needs in_dim >= 1 and num_classes >= 1, got {in_dim} and {num_classes}")
        self.norm = nn.BatchNorm1d(in_dim, affine=False) if use_bn else nn.Identity()
        self.linear = nn.Linear(in_dim, num_classes)
        nn.init.trunc_normal_(self.linear.weight, std=0.01)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: Tensor) -> Tensor:  # (B, D) -> (B, K)
        return self.linear(self.norm(x))


class LinearHeadConfig(ClassifierHeadConfig):
    """Classification head: optional BatchNorm, then one linear layer."""

    name: Literal["linear"]
    use_bn: bool = False


@HEADS.register(LinearHeadConfig)
def build_linear_head(config: LinearHeadConfig, in_dim: int) -> LinearHead:
    return LinearHead(in_dim, config.resolved_num_classes(), use_bn=config.use_bn)

"""Classification head with one hidden layer: Linear -> BN -> activation -> dropout -> Linear."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor, nn

from pretrainlab.models.heads.base import HEADS, ClassifierHeadConfig

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU}


class ClsHead(nn.Module):
    """(B, in_dim) -> (B, num_classes) logits through a hidden layer of `hidden_dim`.

    Args:
        in_dim: feature dimension D.
        num_classes: K.
        hidden_dim: width of the hidden layer.
        activation: "relu" or "gelu".
        use_bn: BatchNorm1d after the hidden linear layer (which then has no bias).
        dropout: dropout probability before the classifier.
    """

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        *,
        hidden_dim: int = 512,
        activation: Literal["relu", "gelu"] = "relu",
        use_bn: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation '{activation}'; known: {', '.join(ACTIVATIONS)}")
        if min(in_dim, num_classes, hidden_dim) < 1:
            raise ValueError(
                f"ClsHead needs positive sizes, got in_dim={in_dim}, num_classes={num_classes}, hidden_dim={hidden_dim}"
            )
        self.hidden = nn.Sequential(
            nn.Linear(in_dim, hidden_dim, bias=not use_bn),
            nn.BatchNorm1d(hidden_dim) if use_bn else nn.Identity(),
            ACTIVATIONS[activation](),
            nn.Dropout(dropout),
        )
        self.classifier = nn.Linear(hidden_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:  # (B, D) -> (B, K)
        return self.classifier(self.hidden(x))  # hidden: (B, hidden_dim)


class ClsHeadConfig(ClassifierHeadConfig):
    """Classification head with a hidden layer: Linear-BN-activation-dropout-Linear."""

    name: Literal["cls"]
    hidden_dim: int = Field(512, ge=1)
    activation: Literal["relu", "gelu"] = "relu"
    use_bn: bool = True
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


@HEADS.register(ClsHeadConfig)
def build_cls_head(config: ClsHeadConfig, in_dim: int) -> ClsHead:
    options = config.model_dump(include={"hidden_dim", "activation", "use_bn", "dropout"})
    return ClsHead(in_dim, config.resolved_num_classes(), **options)

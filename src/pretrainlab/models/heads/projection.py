"""SimCLR projection head g(.) (Chen et al. 2020, arXiv:2002.05709, Sec. 2.1): Linear-BN-ReLU-Linear."""

from __future__ import annotations

from torch import Tensor, nn


class ProjectionHead(nn.Module):
    def __init__(self, in_dim: int, hidden_dim: int = 512, out_dim: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, x: Tensor) -> Tensor:  # (B, in_dim) -> (B, out_dim)
        return self.net(x)

"""K-Net's kernel update stage (Zhang et al. 2021, "K-Net: Towards Unified Image Segmentation",
arXiv:2106.14855, Sec. 3.2), for kernels of 1×1 convolutions, as MMSeg's `KernelUpdateHead` with
`conv_kernel_size=1` (what its semantic configs use; larger kernels are not supported).

One stage refines K kernels (B, K, C) given features (B, C, H, W) and the previous mask logits
(B, K, H, W):

1. group feature assembling (Eq. 3): F^K = Σ_hw m · features, with m the masks normalised by a
   softmax over the K kernels, as MMSeg does for semantic segmentation (its variable is named
   `sigmoid_masks`, but it holds a softmax) -> (B, K, C);
2. adaptive kernel update (Eq. 4–5), `KernelUpdator` below;
3. kernel interaction: self-attention among the K kernels, then an FFN, each + residual and LayerNorm;
4. new mask logits: the kernels embedded by `num_mask_fcs` × (Linear without bias + LN + ReLU) and a
   Linear, dotted with the features at every pixel (a 1×1 conv) -> (B, K, H, W).

The updator may be narrower than the kernels: a C-dim kernel is then split into C / D groups of D
channels, each updated from the same group of its assembled feature by shared weights. This is what
MMSeg's K-Net configs do (kernels of 512, updator of 256); with D = C it is a plain update.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def assemble_group_features(mask_logits: Tensor, features: Tensor) -> Tensor:
    """Group feature assembling (K-Net Eq. 3): (B, K, H, W) logits, (B, C, H, W) features -> (B, K, C),
    the features summed over the pixels weighted by softmax over the K masks."""
    return torch.einsum("bkhw,bchw->bkc", mask_logits.softmax(dim=1), features)


class KernelUpdator(nn.Module):
    """Adaptive kernel update (K-Net Eq. 4–5): (assembled features (..., D), kernels (..., D)) -> (..., D).

    F^G = φ1(F^K) ⊙ φ2(K); G^F = σ(LN(ψ1(F^G))) (update gate), G^K = σ(LN(ψ2(F^G))) (input gate);
    K~ = G^F ⊙ LN(ψ3(F^K)) + G^K ⊙ LN(ψ4(K)), then Linear + LN + ReLU.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dynamic_layer = nn.Linear(dim, 2 * dim)  # φ1 and ψ3, on the assembled features
        self.input_layer = nn.Linear(dim, 2 * dim)  # φ2 and ψ4, on the kernels
        self.update_gate = nn.Linear(dim, dim)
        self.input_gate = nn.Linear(dim, dim)
        self.norm_update_gate = nn.LayerNorm(dim)
        self.norm_input_gate = nn.LayerNorm(dim)
        self.norm_param_out = nn.LayerNorm(dim)
        self.norm_input_out = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, dim)
        self.norm_fc = nn.LayerNorm(dim)

    def forward(self, assembled: Tensor, kernels: Tensor) -> Tensor:
        param_in, param_out = self.dynamic_layer(assembled).chunk(2, dim=-1)  # (..., D) each
        input_in, input_out = self.input_layer(kernels).chunk(2, dim=-1)  # (..., D) each
        gate_features = param_in * input_in  # F^G
        update_gate = self.norm_update_gate(self.update_gate(gate_features)).sigmoid()
        input_gate = self.norm_input_gate(self.input_gate(gate_features)).sigmoid()
        updated = update_gate * self.norm_param_out(param_out) + input_gate * self.norm_input_out(input_out)
        return F.relu(self.norm_fc(self.fc(updated)))


class KernelUpdateStage(nn.Module):
    """(features (B, C, H, W), kernels (B, K, C), mask logits (B, K, H, W)) ->
    (new mask logits (B, K, H, W), new kernels (B, K, C))."""

    def __init__(
        self,
        dim: int,
        *,
        num_heads: int = 8,
        ffn_dim: int = 2048,
        updator_dim: int = 256,
        num_mask_fcs: int = 1,
        use_feat_transform: bool = True,
    ) -> None:
        super().__init__()
        if dim % num_heads or dim % updator_dim:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads} and updator_dim={updator_dim}")
        self.updator_dim = updator_dim
        self.feat_transform: nn.Module = nn.Identity()
        if use_feat_transform:  # a 1×1 conv without norm or activation, initialised as mmcv's ConvModule does
            self.feat_transform = nn.Conv2d(dim, dim, kernel_size=1)
            nn.init.kaiming_normal_(self.feat_transform.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(self.feat_transform.bias)
        self.updator = KernelUpdator(updator_dim)
        self.attention = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm_attention = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Linear(ffn_dim, dim))
        self.norm_ffn = nn.LayerNorm(dim)
        mask_fcs: list[nn.Module] = []
        for _ in range(num_mask_fcs):
            mask_fcs += [nn.Linear(dim, dim, bias=False), nn.LayerNorm(dim), nn.ReLU()]
        self.mask_fcs = nn.Sequential(*mask_fcs)
        self.mask_embed = nn.Linear(dim, dim)

    def forward(self, features: Tensor, kernels: Tensor, mask_logits: Tensor) -> tuple[Tensor, Tensor]:
        features = self.feat_transform(features)  # (B, C, H, W)
        B, K, C = kernels.shape
        assembled = assemble_group_features(mask_logits, features)  # (B, K, C)
        groups = C // self.updator_dim
        kernels = self.updator(
            assembled.reshape(B, K * groups, self.updator_dim), kernels.reshape(B, K * groups, self.updator_dim)
        ).reshape(B, K, C)  # (B, K·G, D) -> (B, K, C)
        attended, _ = self.attention(kernels, kernels, kernels, need_weights=False)
        kernels = self.norm_attention(kernels + attended)
        kernels = self.norm_ffn(kernels + self.ffn(kernels))
        mask_kernels = self.mask_embed(self.mask_fcs(kernels))  # (B, K, C)
        return torch.einsum("bkc,bchw->bkhw", mask_kernels, features), kernels

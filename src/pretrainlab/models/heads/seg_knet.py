"""K-Net head for semantic segmentation (Zhang et al. 2021, "K-Net: Towards Unified Image Segmentation",
arXiv:2106.14855), as MMSeg's `IterativeDecodeHead` with an UPerNet kernel-generating head, in plain PyTorch.

    maps ─► UPerNet ─► features (B, C, H_0, W_0) ─► dropout + 1×1 classifier ─► logits (B, K, H_0, W_0)
    kernels (B, K, C) = the classifier's weights (one per class, shared over the batch)
    `num_stages` × kernel update stage (`layers/kernel_update.py`):
        (features, kernels, logits) ─► (new logits, new kernels)

Semantic inference (`forward`): the last stage's mask logits are the class logits, at the finest
map's stride. Training (`loss`): the per-pixel cross-entropy (ignore 255) of the UPerNet's logits
and of every stage's, each resized to the labels, summed with weight 1 (MMSeg's K-Net configs).
As in MMSeg, the UPerNet's dropout acts on its classifier's input only, so on its logits (the first
masks); the stages see the features without dropout.

Deliberate differences from MMSeg:
- 1×1 kernels only (`conv_kernel_size=1`, what MMSeg's semantic configs use); no `feat_gather_stride`
  or `mask_transform_stride` (both 1 in those configs), no dropout inside the stages (0.0 there), and
  MMSeg's `KernelUpdator` gate options stay at their defaults (no gate norm/activation, no activation
  on its outputs) — they are not configurable here. Masks and features always share the finest
  map's size, so the stage has no resize of the masks (MMSeg's, for other sizes, is never used there).
- The updator's input, gate and output widths are one `updator_dim`: MMSeg's code only works when
  its `in_channels == feat_channels`, and its configs set all three to 256.
- Initialisation: PyTorch's defaults, except the feature transform (kaiming, as mmcv's `ConvModule`).
  MMSeg's stages get PyTorch's defaults too: mmengine's recursive `init_weights` does not enter the
  plain `nn.ModuleList` holding them, so `KernelUpdateHead.init_weights` (xavier) is not called. But
  MMSeg's classifier (the initial kernels) is N(0, 0.01) and its UPerNet convs kaiming, where here the
  `UperHead` keeps its own (PyTorch default) initialisation.
- `forward` returns the last stage's logits in training too (MMSeg returns every stage's there);
  `predictions` gives all of them.
- No auxiliary FCN head (MMSeg's configs add one, weight 0.4, on the backbone's third map).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from pretrainlab.models.heads.seg_base import SEG_HEADS, SegHead, SegHeadConfig, logits_cross_entropy
from pretrainlab.models.heads.seg_uper import UperHead
from pretrainlab.models.layers.kernel_update import KernelUpdateStage


class KNetHead(SegHead):
    """(maps [(B, D_i, H_i, W_i)], finest first) -> class logits (B, K, H_0, W_0), the last stage's masks."""

    def __init__(
        self,
        in_channels: Sequence[int],
        strides: Sequence[int],
        num_classes: int,
        *,
        channels: int = 512,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        dropout: float = 0.1,
        num_stages: int = 3,
        num_heads: int = 8,
        ffn_dim: int = 2048,
        updator_dim: int = 256,
        num_mask_fcs: int = 1,
        use_feat_transform: bool = True,
    ) -> None:
        super().__init__(in_channels, strides, num_classes)
        self.output_stride = strides[0]
        self.kernel_generator = UperHead(
            in_channels, strides, num_classes, channels=channels, pool_scales=pool_scales, dropout=dropout
        )
        self.stages = nn.ModuleList(
            KernelUpdateStage(channels, num_heads=num_heads, ffn_dim=ffn_dim, updator_dim=updator_dim,
                              num_mask_fcs=num_mask_fcs, use_feat_transform=use_feat_transform)
            for _ in range(num_stages)
        )  # fmt: skip

    def predictions(self, maps: Sequence[Tensor]) -> list[Tensor]:
        """The UPerNet's logits, then every stage's: 1 + num_stages tensors (B, K, H_0, W_0)."""
        self.check_maps(maps)
        generator = self.kernel_generator
        features = generator.features(maps)  # (B, C, H_0, W_0)
        logits = generator.classifier(generator.dropout(features))  # (B, K, H_0, W_0)
        kernels = generator.classifier.weight[:, :, 0, 0].expand(features.shape[0], -1, -1)  # (K, C) -> (B, K, C)
        all_logits = [logits]
        for stage in self.stages:
            logits, kernels = stage(features, kernels, logits)
            all_logits.append(logits)
        return all_logits

    def forward(self, maps: Sequence[Tensor]) -> Tensor:
        return self.predictions(maps)[-1]

    def loss(self, maps: Sequence[Tensor], labels: Tensor, *, avg_non_ignore: bool) -> dict[str, Tensor]:
        """`loss`: the sum of the cross-entropies (ignore 255) of every prediction resized to labels (B, H, W);
        for logging, each one detached as `ce_stage_<i>` (0 = the UPerNet's, i = after stage i)."""
        predictions = self.predictions(maps)
        losses = [logits_cross_entropy(logits, labels, avg_non_ignore=avg_non_ignore) for logits in predictions]
        return {"loss": torch.stack(losses).sum(), **{f"ce_stage_{i}": ce.detach() for i, ce in enumerate(losses)}}


class KNetHeadConfig(SegHeadConfig):
    """K-Net: UPerNet kernel-generating head + kernel update stages; defaults of MMSeg's K-Net configs."""

    name: Literal["knet"]
    channels: int = Field(512, ge=1, description="UPerNet width = kernel dimension C")
    pool_scales: tuple[int, ...] = Field((1, 2, 3, 6), description="UPerNet pyramid pooling sizes")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout2d before the UPerNet classifier")
    num_stages: int = Field(3, ge=1, description="kernel update stages")
    num_heads: int = Field(8, ge=1, description="heads of the self-attention among the kernels")
    ffn_dim: int = Field(2048, ge=1, description="hidden width of the stages' FFN")
    updator_dim: int = Field(256, ge=1, description="kernel updator width; a kernel is updated in "
                             "channels / updator_dim groups with shared weights")  # fmt: skip
    num_mask_fcs: int = Field(1, ge=0, description="Linear + LN + ReLU layers embedding the kernels into masks")
    use_feat_transform: bool = Field(True, description="a 1×1 conv on the features at the start of every stage")

    @model_validator(mode="after")
    def _check_widths(self) -> KNetHeadConfig:
        if self.channels % self.num_heads:
            raise ValueError(f"channels={self.channels} must be divisible by num_heads={self.num_heads} "
                             "(self-attention among the kernels)")  # fmt: skip
        if self.channels % self.updator_dim:
            raise ValueError(f"channels={self.channels} must be divisible by updator_dim={self.updator_dim} "
                             "(the kernel is updated in groups of updator_dim channels)")  # fmt: skip
        return self


@SEG_HEADS.register(KNetHeadConfig)
def build_knet(
    config: KNetHeadConfig,
    channels: Sequence[int],
    strides: Sequence[int],
    num_classes: int,
    *,
    decoder_width: int | None = None,  # unused: the width comes from the config
) -> KNetHead:
    return KNetHead(
        channels, strides, num_classes, channels=config.channels, pool_scales=config.pool_scales,
        dropout=config.dropout, num_stages=config.num_stages, num_heads=config.num_heads, ffn_dim=config.ffn_dim,
        updator_dim=config.updator_dim, num_mask_fcs=config.num_mask_fcs, use_feat_transform=config.use_feat_transform,
    )  # fmt: skip

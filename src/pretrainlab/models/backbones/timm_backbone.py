"""Any timm model as a pretrainlab Backbone (ViT, ConvNeXt, ResNet, MobileNetV3, ...).

The timm model is kept as `self.model`, so state-dict keys are `model.<timm key>`.
Multi-scale maps come from timm's `forward_intermediates`; `pooled` from
`forward_head(pre_logits=True)`, i.e. the CLS token for ViTs and the (normed)
global average for CNNs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import timm
import torch
from torch import Tensor, nn

from pretrainlab.models.backbones.base import Backbone, Features

log = logging.getLogger(__name__)


class TimmBackbone(Backbone):
    def __init__(
        self,
        arch: str,
        *,
        in_chans: int = 3,
        img_size: int | None = None,
        patch_size: int | None = None,
        small_input_stem: bool = False,
        drop_path_rate: float = 0.0,
        checkpoint: Path | None = None,
        **timm_kwargs: object,
    ) -> None:
        super().__init__()
        if arch not in timm.list_models():
            close = timm.list_models(f"*{arch.split('_')[0]}*")[:8]
            raise ValueError(f"unknown timm arch '{arch}'; similar: {', '.join(close) or 'none'}")
        kwargs = dict(timm_kwargs)
        is_vit = arch.startswith(("vit_", "deit", "eva", "beit"))
        if is_vit:
            kwargs.setdefault("dynamic_img_size", True)  # multi-crop views of several sizes
            if img_size is not None:
                kwargs["img_size"] = img_size
            if patch_size is not None:
                kwargs["patch_size"] = patch_size
        elif img_size is not None or patch_size is not None:
            raise ValueError(f"img_size / patch_size only apply to ViTs, not to '{arch}'")
        if drop_path_rate:
            kwargs["drop_path_rate"] = drop_path_rate
        # timm's ResNet reads `stem_width` only for deep stems; the small stem honours it itself.
        stem_width = kwargs.pop("stem_width", None) if small_input_stem else None
        self.model = timm.create_model(arch, pretrained=False, num_classes=0, in_chans=in_chans, **kwargs)
        if small_input_stem:
            self._use_small_input_stem(arch, stem_width)
        self.in_chans = in_chans
        self.is_vit = is_vit
        self.patch_size = self.model.patch_embed.patch_size[0] if is_vit else None
        self.num_prefix_tokens = getattr(self.model, "num_prefix_tokens", 0)
        self._probe_shapes(img_size or 64)
        if checkpoint is not None:
            from pretrainlab.models.checkpoint import load_backbone_checkpoint

            load_backbone_checkpoint(self, checkpoint)

    def _use_small_input_stem(self, arch: str, stem_width: object) -> None:
        """CIFAR-style stem: 3x3 stride-1 first conv and no max-pool (keeps 32-px inputs resolvable).

        With `stem_width` the stem conv has that many channels instead of timm's 64 (at full
        resolution the stem and the first block's input convs dominate a narrow ResNet's cost),
        and the first block's input convs are rebuilt to take them.
        """
        conv1 = getattr(self.model, "conv1", None)
        if not isinstance(conv1, nn.Conv2d) or not hasattr(self.model, "maxpool"):
            raise ValueError(f"small_input_stem applies to ResNets with a single-conv stem, not '{arch}'")
        if stem_width is not None and (not isinstance(stem_width, int) or stem_width < 1):
            raise ValueError(f"stem_width={stem_width!r} is not valid; expected a positive number of channels")
        width = stem_width or conv1.out_channels
        self.model.conv1 = nn.Conv2d(conv1.in_channels, width, 3, 1, 1, bias=False)
        self.model.maxpool = nn.Identity()
        if width != conv1.out_channels:
            self.model.bn1 = nn.BatchNorm2d(width)
            first_block = self.model.layer1[0]
            for owner in (first_block, first_block.downsample):
                for name, child in (owner.named_children() if owner is not None else ()):
                    if isinstance(child, nn.Conv2d) and child.in_channels == conv1.out_channels:
                        setattr(owner, name, _with_in_channels(child, width))

    @torch.no_grad()
    def _probe_shapes(self, size: int) -> None:
        """Record `embed_dim`, `out_channels` and `strides` with one dummy forward.

        `embed_dim` is measured, not read from `num_features`: MobileNetV3's pre-logits
        vector comes from its 1×1 `conv_head` (1024 wide for mobilenetv3_small_050), not
        from the last map (288).
        """
        was_training = self.training
        self.eval()
        probe = torch.zeros(1, self.in_chans, size, size)
        features = self.forward(probe)
        self.train(was_training)
        self.embed_dim = features.pooled.shape[1]
        self.out_channels = [m.shape[1] for m in features.maps]
        self.strides = [size // m.shape[-1] for m in features.maps]

    def forward(self, images: Tensor) -> Features:  # images (B, C, H, W)
        self.check_input(images)
        if self.is_vit:
            return self._forward_vit(images)
        final, maps = self.model.forward_intermediates(images)
        pooled = self.model.forward_head(final, pre_logits=True)  # (B, D)
        return Features(pooled=pooled, maps=list(maps))

    def _forward_vit(self, images: Tensor) -> Features:
        tokens = self.model.forward_features(images)  # (B, prefix + N, D), final norm applied
        pooled = self.model.forward_head(tokens, pre_logits=True)  # (B, D)
        patch_tokens = tokens[:, self.num_prefix_tokens :]  # (B, N, D)
        grid_h, grid_w = images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size
        feature_map = patch_tokens.transpose(1, 2).reshape(len(images), -1, grid_h, grid_w)  # (B, D, h, w)
        return Features(pooled=pooled, maps=[feature_map], tokens=patch_tokens)


def _with_in_channels(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A freshly initialised copy of `conv` taking `in_channels` inputs."""
    return nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                     conv.dilation, conv.groups, conv.bias is not None)  # fmt: skip

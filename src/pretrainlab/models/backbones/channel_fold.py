"""Fold a constant input channel into a ViT's patch embedding.

A patch embedding is a convolution with kernel = stride = p and no padding, so every output
reads each input pixel of its patch exactly once: an input channel that is the constant c
adds c · Σ_{kernel} W[:, channel] to every output. Removing the channel and adding that sum
to the bias gives the same outputs exactly (up to float rounding). Four-channel MAE
(`mask_method: four_channels`) is exported this way as a plain 3-channel ViT.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from pretrainlab.models.backbones.timm_backbone import TimmBackbone


@torch.no_grad()
def fold_constant_channel(backbone: TimmBackbone, channel: int, value: float = 1.0) -> TimmBackbone:
    """A copy of the ViT `backbone` without input `channel`, which is folded in as the constant `value`."""
    proj = getattr(getattr(backbone.model, "patch_embed", None), "proj", None)
    if not isinstance(proj, nn.Conv2d):
        raise ValueError(f"{type(backbone).__name__} has no convolutional patch embedding to fold a channel into")
    if proj.kernel_size != proj.stride or proj.padding not in ((0, 0), "valid") or proj.groups != 1:
        raise ValueError(f"folding a channel needs kernel = stride and no padding, got kernel {proj.kernel_size}, "
                         f"stride {proj.stride}, padding {proj.padding}")  # fmt: skip
    if not 0 <= channel < proj.in_channels:
        raise ValueError(f"channel {channel} is not an input channel of a {proj.in_channels}-channel patch embedding")
    kept = [c for c in range(proj.in_channels) if c != channel]
    folded = nn.Conv2d(len(kept), proj.out_channels, proj.kernel_size, proj.stride, bias=True)
    folded.weight.copy_(proj.weight[:, kept])
    bias = proj.bias if proj.bias is not None else torch.zeros(proj.out_channels, device=proj.weight.device)
    folded.bias.copy_(bias + value * proj.weight[:, channel].sum(dim=(1, 2)))
    exported = copy.deepcopy(backbone)
    exported.model.patch_embed.proj = folded.to(proj.weight.device, proj.weight.dtype)
    exported.in_chans = len(kept)
    return exported

"""Any timm model as a pretrainlab Backbone (ViT, ConvNeXt, ResNet, MobileNetV3, ...).

The timm model is kept as `self.model`, so state-dict keys are `model.<timm key>`.
Multi-scale maps come from timm's `forward_intermediates`; `pooled` from
`forward_head(pre_logits=True)`, i.e. the CLS token for ViTs and the (normed)
global average for CNNs. A ViT also gives the CLS token of each of its last n blocks
through the final norm (`last_blocks_tokens`), the input of DINO's linear probe.

Gradient checkpointing (`grad_checkpointing`, ViTs only): each transformer block's activations
are recomputed in backward instead of stored, so a training step holds one block's
activations at a time plus each block's input. It is armed per forward, only in training mode
with autograd recording (eval and `no_grad` forwards run the blocks plainly), on every path
that runs the blocks: `forward` and `last_blocks_tokens` through timm's own switch
(`set_grad_checkpointing`, which timm 1.0's ViTs, DeiT, EVA and BEiT honour in
`forward_features` and `forward_intermediates`, one checkpoint per block), and `run_blocks`
(MAE's masked encoder) by wrapping each block here. Checkpoints are non-reentrant, so blocks
behind a frozen patch embedding still get their gradients, and they restore the RNG state, so
drop-path draws the same masks when recomputed.

The config names every option it passes to timm (no free keyword arguments): family
options are checked against the arch's family at load (`layers` on a ViT is an error),
and `arch` against timm's registry with a did-you-mean.
"""

from __future__ import annotations

import logging
import re
from typing import Literal

import timm
import torch
from pydantic import Field, model_validator
from timm.layers import use_reentrant_ckpt
from timm.models import model_entrypoint
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from pretrainlab.config.component import PositiveInt
from pretrainlab.models.backbones.base import BACKBONES, Backbone, BackboneConfig, Features
from pretrainlab.registry import did_you_mean

log = logging.getLogger(__name__)

VIT_MODULES = ("vision_transformer", "deit", "eva", "beit")  # module-name prefixes of timm's ViTs
RESNET_OPTIONS = ("layers", "channels", "stem_width", "small_input_stem")
VIT_OPTIONS = ("img_size", "patch_size", "embed_dim", "depth", "num_heads")


def timm_family(arch: str) -> str:
    """The timm module defining `arch` (`resnet`, `vision_transformer`, `convnext`, ...)."""
    return model_entrypoint(arch).__module__.rsplit(".", 1)[-1]


def is_vit(arch: str) -> bool:
    return timm_family(arch).startswith(VIT_MODULES)


def check_grad_checkpointing(arch: str) -> None:
    """Raise ValueError unless `arch` is a timm ViT, whose blocks gradient checkpointing wraps."""
    if not is_vit(arch):
        raise ValueError(f"grad_checkpointing: backbone '{arch}' ({timm_family(arch)}) is not a ViT; gradient "
                         f"checkpointing recomputes the blocks of timm ViTs ({', '.join(VIT_MODULES)})")  # fmt: skip
    if use_reentrant_ckpt():
        raise ValueError("grad_checkpointing needs timm's non-reentrant checkpoints (unset TIMM_REENTRANT_CKPT): "
                         "reentrant ones give no gradient to blocks behind a frozen patch embedding")  # fmt: skip


def check_timm_arch(arch: str) -> None:
    """Raise ValueError for an arch timm does not know, with the closest names."""
    if arch in timm.list_models():
        return
    close = timm.list_models(f"*{arch.split('_')[0]}*")[:6]
    raise ValueError(f"unknown timm arch '{arch}'{did_you_mean(arch, timm.list_models())} similar: {', '.join(close) or 'none'}")


class TimmBackboneConfig(BackboneConfig):
    """Any timm model by name (`vit_*`, `convnext_*`, `resnet*`, ...), from scratch or `checkpoint`.

    ResNet options: `layers` (blocks per stage), `channels` (widths per stage),
    `small_input_stem` (CIFAR-style 3x3 stride-1 stem without max-pool) and its `stem_width`.
    ViT options: `img_size`, `patch_size`, `embed_dim`, `depth`, `num_heads`, `grad_checkpointing`.
    """

    name: Literal["timm"]
    arch: str = "resnet18"
    pretrained: Literal[False] = Field(False, description="weights are never downloaded; use `checkpoint`")
    drop_path_rate: float = Field(0.0, ge=0.0, lt=1.0)
    layers: tuple[PositiveInt, ...] | None = Field(None, min_length=1, description="ResNet: blocks per stage")
    channels: tuple[PositiveInt, ...] | None = Field(None, min_length=1, description="ResNet: widths per stage")
    small_input_stem: bool = Field(False, description="ResNet: 3x3 stride-1 stem, no max-pool (32-px images)")
    stem_width: int | None = Field(None, ge=1, description="ResNet with small_input_stem: stem channels")
    img_size: int | None = Field(None, ge=1, description="ViT: input size the position embeddings are built for")
    patch_size: int | None = Field(None, ge=1, description="ViT: patch size")
    embed_dim: int | None = Field(None, ge=1, description="ViT: token width")
    depth: int | None = Field(None, ge=1, description="ViT: number of blocks")
    num_heads: int | None = Field(None, ge=1, description="ViT: attention heads")
    grad_checkpointing: bool = Field(False, description="ViT: recompute each block's activations in "
                                     "backward instead of storing them (less memory, blocks run twice)")  # fmt: skip

    @model_validator(mode="after")
    def _check_arch_and_family(self) -> TimmBackboneConfig:
        check_timm_arch(self.arch)
        family = timm_family(self.arch)
        options = {"resnet": RESNET_OPTIONS, "vit": VIT_OPTIONS}
        arch_is_vit = is_vit(self.arch)
        for group, names in options.items():
            applies = arch_is_vit if group == "vit" else family == "resnet"
            given = [n for n in names if getattr(self, n) not in (None, False)]
            if given and not applies:
                raise ValueError(f"{', '.join(given)}: {group} options do not apply to '{self.arch}' ({family})")
        if self.layers is not None and self.channels is not None and len(self.layers) != len(self.channels):
            raise ValueError(f"layers {list(self.layers)} and channels {list(self.channels)} differ in length")
        if self.stem_width is not None and not self.small_input_stem:
            raise ValueError("stem_width applies with small_input_stem: true (timm reads it only for deep stems)")
        if self.grad_checkpointing:
            check_grad_checkpointing(self.arch)
        return self

    def vit_geometry(self) -> tuple[int, int]:
        """(img_size, patch_size) of a ViT: the given options, else the arch's (its name's `patch<p>`
        and timm's default input size)."""
        named = re.search(r"patch(\d+)", self.arch)
        patch = self.patch_size or (int(named.group(1)) if named else None)
        cfg = timm.models.get_pretrained_cfg(self.arch)
        size = self.img_size or (cfg.input_size[-1] if cfg is not None else None)
        if not is_vit(self.arch) or patch is None or size is None:
            raise ValueError(f"backbone {self.arch}: set backbone.img_size and backbone.patch_size (not a ViT "
                             "whose name gives them)")  # fmt: skip
        return size, patch

    def describe(self) -> str:
        """The arch and every option that changes it, e.g. `resnet18 (layers 1-1-1-1, channels 16-32-64-128, stem 16)`."""
        parts = []
        for key in ("layers", "channels"):
            if getattr(self, key) is not None:
                parts.append(f"{key} {'-'.join(map(str, getattr(self, key)))}")
        if self.small_input_stem:
            parts.append(f"small stem{f' {self.stem_width}' if self.stem_width else ''}")
        for key in VIT_OPTIONS:
            if getattr(self, key) is not None:
                parts.append(f"{key} {getattr(self, key)}")
        return f"{self.arch} ({', '.join(parts)})" if parts else self.arch


@BACKBONES.register(TimmBackboneConfig)
def build_timm(config: TimmBackboneConfig, in_chans: int) -> TimmBackbone:
    options = config.model_dump(include={*RESNET_OPTIONS, *VIT_OPTIONS, "drop_path_rate", "grad_checkpointing"})
    return TimmBackbone(config.arch, in_chans=in_chans, **options)


class TimmBackbone(Backbone):
    """A timm model with the Backbone API; the options are those of `TimmBackboneConfig`."""

    def __init__(
        self,
        arch: str,
        *,
        in_chans: int = 3,
        drop_path_rate: float = 0.0,
        layers: tuple[int, ...] | list[int] | None = None,
        channels: tuple[int, ...] | list[int] | None = None,
        small_input_stem: bool = False,
        stem_width: int | None = None,
        img_size: int | None = None,
        patch_size: int | None = None,
        embed_dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        check_timm_arch(arch)
        if grad_checkpointing:
            check_grad_checkpointing(arch)
        arch_is_vit = is_vit(arch)
        named = {"layers": layers, "channels": channels, "img_size": img_size, "patch_size": patch_size,
                 "embed_dim": embed_dim, "depth": depth, "num_heads": num_heads}  # fmt: skip
        kwargs: dict[str, object] = {key: value for key, value in named.items() if value is not None}
        if arch_is_vit:
            kwargs["dynamic_img_size"] = True  # multi-crop views of several sizes
        elif img_size is not None or patch_size is not None:
            raise ValueError(f"img_size / patch_size only apply to ViTs, not to '{arch}'")
        if drop_path_rate:
            kwargs["drop_path_rate"] = drop_path_rate
        self.model = timm.create_model(arch, pretrained=False, num_classes=0, in_chans=in_chans, **kwargs)
        if small_input_stem:
            self._use_small_input_stem(arch, stem_width)
        elif stem_width is not None:
            raise ValueError("stem_width applies with small_input_stem=True (timm reads it only for deep stems)")
        self.arch = arch
        self.in_chans = in_chans
        self.is_vit = arch_is_vit
        self.use_grad_checkpointing = grad_checkpointing
        self.patch_size = self.model.patch_embed.patch_size[0] if arch_is_vit else None
        self.num_prefix_tokens = getattr(self.model, "num_prefix_tokens", 0)
        self._probe_shapes(img_size or 64)

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

    def _checkpoints_blocks(self) -> bool:
        """Whether this forward checkpoints the blocks: configured, and a backward can follow it."""
        return self.use_grad_checkpointing and self.model.training and torch.is_grad_enabled()

    def _forward_vit(self, images: Tensor) -> Features:
        self.model.set_grad_checkpointing(self._checkpoints_blocks())  # read by timm's forward_features
        tokens = self.model.forward_features(images)  # (B, prefix + N, D), final norm applied
        pooled = self.model.forward_head(tokens, pre_logits=True)  # (B, D)
        patch_tokens = tokens[:, self.num_prefix_tokens :]  # (B, N, D)
        grid_h, grid_w = images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size
        feature_map = patch_tokens.transpose(1, 2).reshape(len(images), -1, grid_h, grid_w)  # (B, D, h, w)
        return Features(pooled=pooled, maps=[feature_map], tokens=patch_tokens)

    def check_last_blocks(self, num_blocks: int) -> None:
        """Raise ValueError unless `last_blocks_tokens(images, num_blocks)` can run: a ViT that pools by
        its CLS token (so the token goes through the final norm) and has at least `num_blocks` blocks."""
        if not self.is_vit:
            raise ValueError(f"backbone {self.arch} is not a ViT: it has no CLS token per block "
                             f"(last {num_blocks} blocks asked for)")  # fmt: skip
        pooling = getattr(self.model, "global_pool", None)
        if getattr(self.model, "cls_token", None) is None or pooling != "token":
            raise ValueError(f"backbone {self.arch} pools by {pooling!r}, not by a CLS token: the CLS tokens of its "
                             "last blocks are not its features")  # fmt: skip
        depth = len(self.model.blocks)
        if not 1 <= num_blocks <= depth:
            raise ValueError(f"backbone {self.arch} has {depth} blocks; the last {num_blocks} were asked for")

    def last_blocks_tokens(self, images: Tensor, num_blocks: int) -> tuple[Tensor, Tensor]:
        """The CLS token of each of the last `num_blocks` blocks and the last block's patch tokens, all through
        the final norm, as DINO's `get_intermediate_layers(x, n)` gives them (Caron et al. 2021, `eval_linear.py`).

        Args:
            images: (B, C, H, W).
            num_blocks: n, 1 <= n <= depth.

        Returns:
            cls (B, n, D), earliest block first (`cls[:, -1]` is `pooled`), and patch tokens (B, N, D)
            (`tokens` of `forward`; register tokens excluded).
        """
        self.check_input(images)
        self.check_last_blocks(num_blocks)
        self.model.set_grad_checkpointing(self._checkpoints_blocks())  # read by timm's forward_intermediates
        outputs = self.model.forward_intermediates(images, indices=num_blocks, return_prefix_tokens=True, norm=True,
                                                   output_fmt="NLC", intermediates_only=True)  # fmt: skip
        cls = torch.stack([prefix[:, 0] for _, prefix in outputs], dim=1)  # prefix (B, P, D) -> cls (B, n, D)
        return cls, outputs[-1][0]

    def run_blocks(self, tokens: Tensor) -> Tensor:
        """The ViT's blocks on tokens the caller embedded itself (MAE's kept patches): (B, N, D) -> (B, N, D),
        without the final norm. With `grad_checkpointing` each block is recomputed in backward, as in `forward`."""
        if not self._checkpoints_blocks():
            return self.model.blocks(tokens)
        for block in self.model.blocks:
            tokens = checkpoint(block, tokens, use_reentrant=False)  # (B, N, D); only the input is kept
        return tokens


def _with_in_channels(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A freshly initialised copy of `conv` taking `in_channels` inputs."""
    return nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                     conv.dilation, conv.groups, conv.bias is not None)  # fmt: skip

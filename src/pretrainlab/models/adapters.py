"""Parameter-efficient adaptation: AdaptFormer, LoRA or ViDA adapters injected into a backbone's blocks.

Every kind is zero at initialisation, so an adapted model computes exactly what the unadapted
one does until its adapters train.

AdaptFormer (Chen et al. 2022, "AdaptFormer: Adapting Vision Transformers for Scalable Visual
Recognition", NeurIPS; the official `ffn_option="parallel"`): a bottleneck MLP beside each chosen
block's MLP, fed from the residual stream after attention (before `norm2`) and added outside the
MLP's drop-path:

    x = x + drop_path(attn(norm1(x)))
    x = x + drop_path(mlp(norm2(x))) + scale · up(dropout(relu(down(norm(x)))))

`norm` is a LayerNorm with `layernorm: true` (the official `adapter_layernorm_option="in"`), else
the identity (its image recipe's "none"). `down` is Kaiming-uniform (a = √5), `up` and both biases
are zero. Per block of width d: 2·d·bottleneck + bottleneck + d parameters, plus 2·d with the norm.

LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022) on the
chosen linear layers: W x + b + (alpha / rank) · B A x, A (rank, d_in) Kaiming-uniform (a = √5), B
(d_out, rank) zero; no dropout (`dropout` is AdaptFormer's).

ViDA (Liu et al. 2023, "ViDA: Homeostatic Visual Domain Adapter for Continual Test Time
Adaptation", ICLR 2024; official code Yangsenqiao/vida): a low-rank and a high-rank adapter beside
the chosen linear layers, W x + b + λ_low · U_l D_l x + λ_high · U_h D_h x, with D ~ N(0, 1/r²)
(as the official code) and U zero, no biases; λ_low = λ_high = `vida_scale`. ViDA's homeostatic
factors (λ moved by the teacher's uncertainty every step) belong to a method; here they are the
plain attributes `low_scale` and `high_scale` of each `ViDALinear`.

Where. Blocks are found by module name and type in the backbone only (a head's transformer blocks,
e.g. Segmenter's, are never adapted): timm's PVTv2 blocks `stages.{s}.blocks.{j}` (MiT B0-B5, four
stages) or timm's ViT blocks `blocks.{j}` (one stage). `stages` chooses among them:

    "full"       every block;
    "half"       with S > 1 stages the last S // 2 stages (MiT: stages 2 and 3); a one-stage ViT of
                 depth L: its last ⌈L / 2⌉ blocks (depth 12: blocks 6-11; depth 3: blocks 1-2);
    [i, ...]     those stage indices (a ViT has only stage 0).

LoRA and ViDA wrap the linear layers of the chosen blocks whose names, relative to the block, match
`targets` (a name, a module prefix or a glob, as `engine/freeze.py` matches them); by default the
attention projections: `attn.q`, `attn.kv`, `attn.proj` in MiT, `attn.qkv`, `attn.proj` in a ViT.

Names. An adapted block or linear layer takes over the original's modules and parameters, so every
original parameter keeps its name (`...blocks.0.attn.q.weight`); the new ones live under
`adaptformer.`, `lora.`, `vida_low.` or `vida_high.`. Load the unadapted weights *before* injecting
(after it, a strict load misses exactly the adapter parameters).

What trains is decided by `engine/freeze.set_trainable` alone, with the patterns of
`trainable_patterns`; nothing here sets `requires_grad`.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from typing import Annotated, Literal

import torch.nn.functional as F
from pydantic import Field, model_validator
from timm.models import pvt_v2, vision_transformer
from torch import Tensor, nn

from pretrainlab.config.component import Strict
from pretrainlab.models.backbones.base import Backbone
from pretrainlab.name_patterns import matches
from pretrainlab.registry import did_you_mean

log = logging.getLogger(__name__)

AdapterKind = Literal["none", "adaptformer", "lora", "vida"]
TrainMode = Literal["all", "decoder", "adapters"]
StageIndex = Annotated[int, Field(ge=0)]

KIND_OPTIONS: dict[str, tuple[str, ...]] = {
    "adaptformer": ("bottleneck", "scale", "dropout", "layernorm"),
    "lora": ("rank", "alpha", "targets"),
    "vida": ("high_rank", "low_rank", "vida_scale", "targets"),
}
MIT_BLOCK_NAME = re.compile(r"(?:^|\.)stages\.(\d+)\.blocks\.\d+$")
VIT_BLOCK_NAME = re.compile(r"(?:^|\.)blocks\.\d+$")
DEFAULT_TARGETS: dict[type[nn.Module], tuple[str, ...]] = {
    pvt_v2.Block: ("attn.q", "attn.kv", "attn.proj"),
    vision_transformer.Block: ("attn.qkv", "attn.proj"),
}


class AdaptersConfig(Strict):
    """What trains during adaptation, and which adapters the backbone gets (see the module docstring).

    `train`: "all" = every parameter (adapters included); "decoder" = the backbone is frozen, the
    head trains; "adapters" = the backbone is frozen but for its adapters, which train with the head.
    """

    train: TrainMode = "all"
    kind: AdapterKind = "none"
    stages: Literal["half", "full"] | Annotated[list[StageIndex], Field(min_length=1)] = Field(
        "half", description="half | full | stage indices; a ViT is one stage, 'half' = its last ⌈depth/2⌉ blocks"
    )
    bottleneck: int = Field(64, ge=1, description="adaptformer: hidden width of the adapter")
    scale: float = Field(0.1, gt=0.0, description="adaptformer: factor of the adapter's output")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="adaptformer: dropout after the ReLU")
    layernorm: bool = Field(False, description="adaptformer: LayerNorm on the adapter's input ('in')")
    rank: int = Field(8, ge=1, description="lora: rank r of B A")
    alpha: float = Field(8.0, gt=0.0, description="lora: the update is scaled by alpha / rank")
    targets: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)] | None = Field(
        None, description="lora / vida: linear layers of a block (name, prefix or glob); null = attention projections"
    )
    high_rank: int = Field(128, ge=1, description="vida: rank of the high-rank adapter")
    low_rank: int = Field(1, ge=1, description="vida: rank of the low-rank adapter")
    vida_scale: float = Field(1.0, gt=0.0, description="vida: initial factor λ of both adapters' outputs")

    @model_validator(mode="after")
    def _check(self) -> AdaptersConfig:
        if self.kind == "none" and self.train == "adapters":
            raise ValueError("train='adapters' needs adapters: set kind to adaptformer, lora or vida")
        if self.kind != "none" and self.train == "decoder":
            raise ValueError(f"kind={self.kind!r} with train='decoder': the adapters would stay zero; "
                             "use train='adapters' (or 'all'), or kind='none'")  # fmt: skip
        own = KIND_OPTIONS.get(self.kind, ())
        other_kinds_options = {key for keys in KIND_OPTIONS.values() for key in keys} - set(own)
        # an option of another kind at its default is no error: a saved config (config.yaml) lists every field
        foreign = sorted(key for key in other_kinds_options & self.model_fields_set
                         if getattr(self, key) != type(self).model_fields[key].default)  # fmt: skip
        if foreign:
            raise ValueError(f"{', '.join(foreign)}: not an option of kind={self.kind!r} "
                             f"(its options: {', '.join(own) or 'none'})")  # fmt: skip
        if self.kind == "vida" and self.low_rank >= self.high_rank:
            raise ValueError(f"low_rank={self.low_rank} must be below high_rank={self.high_rank}")
        if isinstance(self.stages, list) and len(set(self.stages)) != len(self.stages):
            raise ValueError(f"stages={self.stages} lists a stage twice")
        return self


# --------------------------------------------------------------------------- adapter modules


class AdaptFormer(nn.Module):
    """(B, N, D) -> (B, N, D): scale · up(dropout(relu(down(norm(x))))); zero at initialisation."""

    def __init__(self, dim: int, bottleneck: int, *, scale: float, dropout: float, use_layernorm: bool,
                 like: Tensor) -> None:  # fmt: skip
        super().__init__()
        factory = {"device": like.device, "dtype": like.dtype}
        self.norm = nn.LayerNorm(dim, **factory) if use_layernorm else nn.Identity()
        self.down = nn.Linear(dim, bottleneck, **factory)
        self.dropout = nn.Dropout(dropout)
        self.up = nn.Linear(bottleneck, dim, **factory)
        self.scale = scale
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: Tensor) -> Tensor:  # x (B, N, D)
        hidden = self.dropout(F.relu(self.down(self.norm(x))))  # (B, N, bottleneck)
        return self.up(hidden) * self.scale  # (B, N, D)


class LowRank(nn.Module):
    """(..., d_in) -> (..., d_out): up(down(x)), no biases, `up` zero at initialisation.

    `down` is Kaiming-uniform (a = √5, LoRA's A) or, with `down_std`, N(0, down_std²) (ViDA)."""

    def __init__(self, in_features: int, out_features: int, rank: int, *, like: Tensor,
                 down_std: float | None = None) -> None:  # fmt: skip
        super().__init__()
        factory = {"device": like.device, "dtype": like.dtype}
        self.down = nn.Linear(in_features, rank, bias=False, **factory)
        self.up = nn.Linear(rank, out_features, bias=False, **factory)
        if down_std is None:
            nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        else:
            nn.init.normal_(self.down.weight, std=down_std)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: Tensor) -> Tensor:  # x (..., d_in)
        return self.up(self.down(x))  # (..., d_out)


class LoRALinear(nn.Module):
    """A linear layer plus LoRA: W x + b + (alpha / rank) · B A x; `weight` and `bias` are the original's."""

    def __init__(self, linear: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.register_parameter("bias", linear.bias)
        self.lora = LowRank(linear.in_features, linear.out_features, rank, like=linear.weight)
        self.scaling = alpha / rank
        self.train(linear.training)

    def forward(self, x: Tensor) -> Tensor:  # x (..., d_in) -> (..., d_out)
        return F.linear(x, self.weight, self.bias) + self.scaling * self.lora(x)


class ViDALinear(nn.Module):
    """A linear layer plus ViDA's adapter pair: W x + b + low_scale · low(x) + high_scale · high(x)."""

    def __init__(self, linear: nn.Linear, low_rank: int, high_rank: int, scale: float) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.register_parameter("bias", linear.bias)
        sizes = (linear.in_features, linear.out_features)
        self.vida_low = LowRank(*sizes, low_rank, like=linear.weight, down_std=1.0 / low_rank**2)
        self.vida_high = LowRank(*sizes, high_rank, like=linear.weight, down_std=1.0 / high_rank**2)
        self.low_scale = scale
        self.high_scale = scale
        self.train(linear.training)

    def forward(self, x: Tensor) -> Tensor:  # x (..., d_in) -> (..., d_out)
        adapted = self.low_scale * self.vida_low(x) + self.high_scale * self.vida_high(x)
        return F.linear(x, self.weight, self.bias) + adapted


ADAPTER_MODULES = (AdaptFormer, LowRank)


# --------------------------------------------------------------------------- adapted blocks


def _take_over(new: nn.Module, block: nn.Module, names: tuple[str, ...]) -> None:
    """Register `block`'s children `names` (all it has, in its order) on `new`, under the same names."""
    children = [name for name, _ in block.named_children()]
    if children != list(names) or list(block.parameters(recurse=False)):
        raise TypeError(f"{type(block).__module__}.{type(block).__name__} has modules {children}, expected "
                        f"{list(names)}: this timm version changed the block, whose forward is restated here")  # fmt: skip
    for name in names:
        new.add_module(name, getattr(block, name))


class AdaptFormerPVTv2Block(nn.Module):
    """timm's PVTv2 (MiT) block with AdaptFormer beside its Mix-FFN; x (B, N, D) with N = H·W of `feat_size`."""

    def __init__(self, block: pvt_v2.Block, adapter: AdaptFormer) -> None:
        super().__init__()
        _take_over(self, block, ("norm1", "attn", "drop_path1", "norm2", "mlp", "drop_path2"))
        self.adaptformer = adapter
        self.train(block.training)  # the adapter's dropout follows the model's mode

    def forward(self, x: Tensor, feat_size: list[int]) -> Tensor:  # x (B, N, D)
        x = x + self.drop_path1(self.attn(self.norm1(x), feat_size))
        return x + self.drop_path2(self.mlp(self.norm2(x), feat_size)) + self.adaptformer(x)


class AdaptFormerViTBlock(nn.Module):
    """timm's ViT block with AdaptFormer beside its MLP (outside layer scale and drop-path); x (B, N, D)."""

    def __init__(self, block: vision_transformer.Block, adapter: AdaptFormer) -> None:
        super().__init__()
        _take_over(self, block, ("norm1", "attn", "ls1", "drop_path1", "norm2", "mlp", "ls2", "drop_path2"))
        self.adaptformer = adapter
        self.train(block.training)  # the adapter's dropout follows the model's mode

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:  # x (B, N, D)
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x), attn_mask=attn_mask, is_causal=is_causal)))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x)))) + self.adaptformer(x)


ADAPTFORMER_BLOCKS: dict[type[nn.Module], type[nn.Module]] = {
    pvt_v2.Block: AdaptFormerPVTv2Block,
    vision_transformer.Block: AdaptFormerViTBlock,
}


# --------------------------------------------------------------------------- where adapters go


def backbone_of(model: nn.Module) -> tuple[Backbone, str]:
    """The backbone of `model` (itself, or its `backbone` attribute) and its name prefix in `model`."""
    if isinstance(model, Backbone):
        return model, ""
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, Backbone):
        raise TypeError(f"adapters go into a Backbone or a model with a `backbone` (a Segmentor), "
                        f"not {type(model).__name__}")  # fmt: skip
    return backbone, "backbone."


def transformer_stages(backbone: nn.Module) -> list[list[str]]:
    """Names of the backbone's transformer blocks, by stage: timm PVTv2 / MiT blocks `stages.{s}.blocks.{j}`
    (one list per stage) or timm ViT blocks `blocks.{j}` (one list)."""
    stages: dict[int, list[str]] = {}
    for name, module in backbone.named_modules():
        mit = MIT_BLOCK_NAME.search(name)
        if type(module) is pvt_v2.Block and mit is not None:
            stages.setdefault(int(mit.group(1)), []).append(name)
        elif type(module) is vision_transformer.Block and VIT_BLOCK_NAME.search(name):
            stages.setdefault(0, []).append(name)
    if not stages:
        raise ValueError(f"{type(backbone).__name__} has no timm PVTv2 (MiT) or ViT blocks: adapters apply to MiT "
                         "(`stages.{s}.blocks.{j}`) and ViT (`blocks.{j}`) backbones")  # fmt: skip
    return [stages[index] for index in sorted(stages)]


def chosen_blocks(stages: list[list[str]], choice: Literal["half", "full"] | list[int]) -> list[str]:
    """The block names `choice` selects among `stages` (see the module docstring)."""
    if choice == "full":
        return [name for stage in stages for name in stage]
    if choice == "half":
        if len(stages) == 1:
            return stages[0][len(stages[0]) // 2 :]  # the last ⌈L / 2⌉ blocks
        return [name for stage in stages[len(stages) - len(stages) // 2 :] for name in stage]
    missing = [index for index in choice if index >= len(stages)]
    if missing:
        raise ValueError(f"stages={choice}: no stage {missing} in a backbone with stages 0-{len(stages) - 1}")
    return [name for index in sorted(choice) for name in stages[index]]


def _replace(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    root.get_submodule(parent_name).add_module(child, module)


def _add_adaptformers(backbone: nn.Module, blocks: list[str], config: AdaptersConfig) -> None:
    for name in blocks:
        block = backbone.get_submodule(name)
        width = block.mlp.fc1.in_features
        adapter = AdaptFormer(width, config.bottleneck, scale=config.scale, dropout=config.dropout,
                              use_layernorm=config.layernorm, like=block.mlp.fc1.weight)  # fmt: skip
        _replace(backbone, name, ADAPTFORMER_BLOCKS[type(block)](block, adapter))


def _wrap_linears(backbone: nn.Module, blocks: list[str], config: AdaptersConfig) -> None:
    """Wrap every linear layer of `blocks` matching `config.targets` (or the defaults) in LoRA / ViDA."""
    chosen: list[str] = []
    unmatched = set(config.targets or ())
    known: set[str] = set()
    for block_name in blocks:
        block = backbone.get_submodule(block_name)
        targets = config.targets or DEFAULT_TARGETS[type(block)]
        for name, module in block.named_modules():
            if isinstance(module, nn.Linear):
                known.add(name)
                hits = {target for target in targets if matches(name, target)}
                unmatched -= hits
                if hits:
                    chosen.append(f"{block_name}.{name}")
    if unmatched:
        raise ValueError(f"targets {sorted(unmatched)} match no linear layer of the chosen blocks"
                         f"{did_you_mean(min(unmatched), sorted(known))} linear layers: {', '.join(sorted(known))}")  # fmt: skip
    for name in chosen:
        linear = backbone.get_submodule(name)
        if config.kind == "lora":
            wrapped: nn.Module = LoRALinear(linear, config.rank, config.alpha)
        else:
            wrapped = ViDALinear(linear, config.low_rank, config.high_rank, config.vida_scale)
        _replace(backbone, name, wrapped)


def adapter_parameter_names(model: nn.Module) -> list[str]:
    """Names (in `model`) of the parameters of every adapter module inside `model`, in `named_parameters` order."""
    owned = {id(param) for module in model.modules() if isinstance(module, ADAPTER_MODULES)
             for param in module.parameters()}  # fmt: skip
    return [name for name, param in model.named_parameters() if id(param) in owned]


def inject_adapters(model: nn.Module, config: AdaptersConfig) -> list[str]:
    """Add `config.kind` adapters to the backbone of `model` (a Segmentor or a Backbone), in place.

    Call it after loading the unadapted weights and before any copy of the model (an EMA teacher),
    so the copy has the adapters too. Returns the names (in `model`) of the new parameters; nothing
    is added for kind "none". Raises ValueError when the backbone has no supported blocks, a stage or
    target does not exist, or the model already has adapters.
    """
    if config.kind == "none":
        return []
    if adapter_parameter_names(model):
        raise ValueError(f"{type(model).__name__} already has adapters; inject them once")
    backbone, _ = backbone_of(model)
    blocks = chosen_blocks(transformer_stages(backbone), config.stages)
    if config.kind == "adaptformer":
        _add_adaptformers(backbone, blocks, config)
    else:
        _wrap_linears(backbone, blocks, config)
    names = adapter_parameter_names(model)
    count = sum(model.get_parameter(name).numel() for name in names)
    log.info("%s adapters in %d blocks (stages %s): %d parameters", config.kind, len(blocks), config.stages, count)
    return names


def trainable_patterns(
    config: AdaptersConfig, adapter_names: Sequence[str], head: Sequence[str] = ("head",)
) -> list[str] | Literal["all"]:
    """The `train` patterns of `engine.freeze.set_trainable` for `config.train`.

    Args:
        adapter_names: what `inject_adapters` returned, for the same model `set_trainable` is given.
        head: patterns of everything outside the backbone that trains (a Segmentor: its `head`).
    """
    if config.train == "all":
        return "all"
    if config.train == "decoder":
        return list(head)
    if not adapter_names:
        raise ValueError("train='adapters' but the model has no adapters: call inject_adapters first")
    return [*head, *adapter_names]

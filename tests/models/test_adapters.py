"""Adapters (models/adapters.py): identity at initialisation, the AdaptFormer / LoRA / ViDA formulas,
hand-counted parameters, stage and target choice, what trains, optimizer groups and the DACS teacher copy."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from pretrainlab.engine.freeze import set_trainable
from pretrainlab.engine.optim import param_groups
from pretrainlab.eval.segmentation_model import Segmentor
from pretrainlab.methods.dacs import DACS, ema_update_parameters_
from pretrainlab.models.adapters import (
    AdaptersConfig,
    LoRALinear,
    ViDALinear,
    adapter_parameter_names,
    inject_adapters,
    trainable_patterns,
)
from pretrainlab.models.backbones import TimmBackboneConfig, build_backbone
from pretrainlab.models.backbones.mit import MiTBackboneConfig
from pretrainlab.models.heads.seg_base import build_seg_head
from pretrainlab.models.heads.seg_linear import SegLinearHeadConfig

NUM_CLASSES = 4
MIT_B0_WIDTHS = (32, 64, 160, 256)
MIT_B0_DEPTHS = (2, 2, 2, 2)
VIT_WIDTH = 32


@functools.cache
def _mit_segmentor() -> Segmentor:
    torch.manual_seed(0)
    backbone = build_backbone(MiTBackboneConfig(variant="b0"))
    head = build_seg_head(SegLinearHeadConfig(), backbone.out_channels, backbone.strides, NUM_CLASSES)
    return Segmentor(backbone, head)


def mit_segmentor() -> Segmentor:
    """A fresh copy of one MiT-b0 segmentor (copying is three times faster than building)."""
    return copy.deepcopy(_mit_segmentor())


def vit_segmentor(depth: int = 4) -> Segmentor:
    config = TimmBackboneConfig(arch="vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=VIT_WIDTH,
                                depth=depth, num_heads=2)  # fmt: skip
    backbone = build_backbone(config)
    head = build_seg_head(SegLinearHeadConfig(), backbone.out_channels, backbone.strides, NUM_CLASSES)
    return Segmentor(backbone, head)


SEGMENTORS = {"mit": mit_segmentor, "vit": vit_segmentor}


def images(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(1))  # (B, C, H, W)


def numel(model: nn.Module, names: list[str]) -> int:
    return sum(model.get_parameter(name).numel() for name in names)


def adapted_blocks(model: nn.Module) -> list[str]:
    return sorted({name.split(".adaptformer.")[0] for name in adapter_parameter_names(model)})


# --- identity at initialisation --------------------------------------------------------------------


@pytest.mark.parametrize("backbone", ["mit", "vit"])
@pytest.mark.parametrize(
    "config",
    [
        AdaptersConfig(kind="adaptformer", train="adapters", stages="full"),
        AdaptersConfig(kind="adaptformer", train="adapters", stages="full", layernorm=True),
        AdaptersConfig(kind="lora", train="adapters", stages="full"),
        AdaptersConfig(kind="vida", train="adapters", stages="full"),
    ],
    ids=["adaptformer", "adaptformer-ln", "lora", "vida"],
)
def test_adapted_model_is_identical_at_initialisation(backbone: str, config: AdaptersConfig) -> None:
    model = SEGMENTORS[backbone]().eval()
    reference = copy.deepcopy(model)
    names = inject_adapters(model, config)
    assert names and all(name.startswith("backbone.") for name in names)
    x = images()
    with torch.no_grad():
        for adapted, original in zip(model.backbone(x).maps, reference.backbone(x).maps):
            assert torch.equal(adapted, original)
        assert torch.equal(model(x), reference(x))


# --- the formulas ----------------------------------------------------------------------------------


def randomise_up_projections(model: nn.Module) -> None:
    with torch.no_grad():
        for name in adapter_parameter_names(model):
            if ".up." in name:
                model.get_parameter(name).normal_(std=0.1)


def test_adaptformer_mit_block_adds_the_adapter_of_the_residual_stream_before_norm2() -> None:
    """adapted(x) = original(x) + scale · up(relu(down(y))), y = x + attn(norm1(x)): the adapter reads the
    residual stream after attention and its output bypasses the MLP (eval: drop-path and dropout off)."""
    backbone = mit_segmentor().backbone.eval()
    original = copy.deepcopy(backbone.model.stages[2].blocks[0])
    inject_adapters(backbone, AdaptersConfig(kind="adaptformer", train="adapters", stages=[2]))
    randomise_up_projections(backbone)
    block, adapter = backbone.model.stages[2].blocks[0], backbone.model.stages[2].blocks[0].adaptformer
    feat_size = [4, 4]
    x = torch.randn(2, 16, MIT_B0_WIDTHS[2])  # (B, N = 4·4, D)
    with torch.no_grad():
        y = x + original.attn(original.norm1(x), feat_size)
        expected = original(x, feat_size) + 0.1 * adapter.up(torch.relu(adapter.down(y)))
        actual = block(x, feat_size)
    assert not torch.allclose(actual, original(x, feat_size))
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)


def test_adaptformer_vit_block_with_layernorm() -> None:
    model = vit_segmentor(depth=2).eval()
    original = copy.deepcopy(model.backbone.model.blocks[1])
    config = AdaptersConfig(kind="adaptformer", train="adapters", layernorm=True, scale=0.5)
    inject_adapters(model, config)
    randomise_up_projections(model)
    block = model.backbone.model.blocks[1]
    adapter = block.adaptformer
    x = torch.randn(2, 17, VIT_WIDTH)  # (B, 1 + N, D)
    with torch.no_grad():
        y = x + original.attn(original.norm1(x))
        expected = original(x) + 0.5 * adapter.up(torch.relu(adapter.down(adapter.norm(y))))
        torch.testing.assert_close(block(x), expected, rtol=0, atol=1e-6)


def test_lora_linear_is_w_x_plus_scaled_b_a_x() -> None:
    linear = nn.Linear(6, 5)
    lora = LoRALinear(linear, rank=2, alpha=3.0)
    assert lora.weight is linear.weight and lora.bias is linear.bias
    with torch.no_grad():
        lora.lora.up.weight.normal_()
    a, b = lora.lora.down.weight, lora.lora.up.weight  # (r, d_in), (d_out, r)
    x = torch.randn(4, 6)
    torch.testing.assert_close(lora(x), linear(x) + 1.5 * x @ a.T @ b.T)


def test_vida_linear_adds_low_and_high_rank_adapters_with_their_scales() -> None:
    linear = nn.Linear(6, 5, bias=False)
    vida = ViDALinear(linear, low_rank=1, high_rank=4, scale=1.0)
    vida.low_scale, vida.high_scale = 0.5, 2.0
    with torch.no_grad():
        vida.vida_low.up.weight.normal_()
        vida.vida_high.up.weight.normal_()
    low, high = vida.vida_low, vida.vida_high
    x = torch.randn(3, 6)
    expected = linear(x) + 0.5 * x @ low.down.weight.T @ low.up.weight.T + 2.0 * x @ high.down.weight.T @ high.up.weight.T
    torch.testing.assert_close(vida(x), expected)
    assert vida.bias is None


# --- parameter counts, by hand ---------------------------------------------------------------------


@pytest.mark.parametrize("layernorm", [False, True])
def test_mit_b0_half_adaptformer_adds_the_hand_counted_parameters(layernorm: bool) -> None:
    """Per block of width d: down d·64 + 64, up 64·d + d (+ LayerNorm 2d); `half` = stages 2 and 3."""
    model = mit_segmentor()
    before = sum(p.numel() for p in model.parameters())
    names = inject_adapters(model, AdaptersConfig(kind="adaptformer", train="adapters", bottleneck=64,
                                                  layernorm=layernorm))  # fmt: skip
    expected = sum(
        depth * (2 * width * 64 + 64 + width + (2 * width if layernorm else 0))
        for width, depth in list(zip(MIT_B0_WIDTHS, MIT_B0_DEPTHS))[2:]
    )
    assert expected == (2 * (2 * 160 * 64 + 64 + 160) + 2 * (2 * 256 * 64 + 64 + 256)
                        + (2 * 2 * (160 + 256) if layernorm else 0))  # fmt: skip
    assert numel(model, names) == expected
    assert sum(p.numel() for p in model.parameters()) == before + expected


def test_mit_b0_full_lora_and_vida_parameter_counts() -> None:
    """Defaults q (d -> d), kv (d -> 2d), proj (d -> d): r · (d_in + d_out) each, 7 r d per block."""
    for kind, ranks in (("lora", 4), ("vida", 1 + 16)):
        model = mit_segmentor()
        options = {"rank": 4} if kind == "lora" else {"low_rank": 1, "high_rank": 16}
        names = inject_adapters(model, AdaptersConfig(kind=kind, train="adapters", stages="full", **options))
        expected = sum(depth * 7 * ranks * width for width, depth in zip(MIT_B0_WIDTHS, MIT_B0_DEPTHS))
        assert numel(model, names) == expected, kind


def test_vit_lora_on_qkv_and_proj() -> None:
    """qkv (d -> 3d) and proj (d -> d): 6 r d per block; `half` of depth 3 = its last 2 blocks."""
    model = vit_segmentor(depth=3)
    names = inject_adapters(model, AdaptersConfig(kind="lora", train="adapters", rank=2))
    assert numel(model, names) == 2 * 6 * 2 * VIT_WIDTH
    assert {name.split(".attn.")[0] for name in names} == {"backbone.model.blocks.1", "backbone.model.blocks.2"}
    assert {name.split(".attn.")[1].split(".")[0] for name in names} == {"qkv", "proj"}


# --- where adapters go -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stages", "expected"),
    [
        ("half", [f"stages.{s}.blocks.{j}" for s in (2, 3) for j in (0, 1)]),
        ("full", [f"stages.{s}.blocks.{j}" for s in range(4) for j in (0, 1)]),
        ([3, 0], ["stages.0.blocks.0", "stages.0.blocks.1", "stages.3.blocks.0", "stages.3.blocks.1"]),
    ],
)
def test_mit_stage_choice(stages: object, expected: list[str]) -> None:
    backbone = mit_segmentor().backbone
    inject_adapters(backbone, AdaptersConfig(kind="adaptformer", train="adapters", stages=stages))
    assert adapted_blocks(backbone) == [f"model.{name}" for name in expected]


@pytest.mark.parametrize(("depth", "stages", "expected"), [(4, "half", [2, 3]), (3, "half", [1, 2]),
                                                           (1, "half", [0]), (3, "full", [0, 1, 2]),
                                                           (3, [0], [0, 1, 2])])  # fmt: skip
def test_vit_is_one_stage_and_half_is_its_last_half(depth: int, stages: object, expected: list[int]) -> None:
    model = vit_segmentor(depth=depth)
    inject_adapters(model, AdaptersConfig(kind="adaptformer", train="adapters", stages=stages))
    assert adapted_blocks(model) == [f"backbone.model.blocks.{j}" for j in expected]


def test_default_targets_are_the_attention_projections_of_mit() -> None:
    backbone = mit_segmentor().backbone
    inject_adapters(backbone, AdaptersConfig(kind="vida", train="adapters", stages=[3]))
    wrapped = sorted(name for name, module in backbone.named_modules() if isinstance(module, ViDALinear))
    assert wrapped == [f"model.stages.3.blocks.{j}.attn.{t}" for j in (0, 1) for t in ("kv", "proj", "q")]


def test_explicit_targets_by_prefix_and_glob() -> None:
    backbone = mit_segmentor().backbone
    inject_adapters(backbone, AdaptersConfig(kind="lora", train="adapters", stages=[3], targets=["mlp", "attn.q"]))
    wrapped = sorted(name.removeprefix("model.stages.3.blocks.0.")
                     for name, module in backbone.named_modules() if isinstance(module, LoRALinear)
                     and name.startswith("model.stages.3.blocks.0."))  # fmt: skip
    assert wrapped == ["attn.q", "mlp.fc1", "mlp.fc2"]


def test_bad_stage_and_target_name_their_key() -> None:
    with pytest.raises(ValueError, match=r"stages=\[4\]: no stage \[4\].*stages 0-3"):
        inject_adapters(mit_segmentor(), AdaptersConfig(kind="adaptformer", train="adapters", stages=[4]))
    with pytest.raises(ValueError, match=r"targets \['attn.qq'\].*did you mean 'attn.q'"):
        inject_adapters(mit_segmentor(), AdaptersConfig(kind="lora", train="adapters", targets=["attn.qq"]))


def test_backbones_without_transformer_blocks_and_second_injection_are_refused() -> None:
    resnet = build_backbone(TimmBackboneConfig(arch="resnet18", layers=(1, 1, 1, 1), channels=(8, 8, 16, 16)))
    assert inject_adapters(resnet, AdaptersConfig()) == []  # kind none: nothing to find
    with pytest.raises(ValueError, match="no timm PVTv2 \\(MiT\\) or ViT blocks"):
        inject_adapters(resnet, AdaptersConfig(kind="lora", train="adapters"))
    model = mit_segmentor()
    inject_adapters(model, AdaptersConfig(kind="lora", train="adapters"))
    with pytest.raises(ValueError, match="already has adapters"):
        inject_adapters(model, AdaptersConfig(kind="vida", train="adapters"))
    with pytest.raises(TypeError, match="a Backbone or a model with a `backbone`"):
        inject_adapters(nn.Linear(2, 2), AdaptersConfig(kind="lora", train="adapters"))


def test_original_parameters_keep_their_names() -> None:
    """An unadapted state dict loads into the adapted model missing exactly the adapter parameters."""
    model = mit_segmentor()
    state = copy.deepcopy(model.state_dict())
    names = inject_adapters(model, AdaptersConfig(kind="adaptformer", train="adapters", stages="full"))
    result = model.load_state_dict(state, strict=False)
    assert result.unexpected_keys == []
    assert sorted(result.missing_keys) == sorted(names)


# --- the config ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"kind": "adaptformer", "train": "adapters", "bottleneck": 0}, "bottleneck"),
        ({"kind": "adaptformer", "train": "adapters", "dropout": 1.0}, "dropout"),
        ({"kind": "adaptformer", "train": "adapters", "scale": 0.0}, "scale"),
        ({"kind": "lora", "train": "adapters", "rank": 0}, "rank"),
        ({"kind": "lora", "train": "adapters", "targets": []}, "targets"),
        ({"kind": "lora", "train": "adapters", "stages": []}, "stages"),
        ({"kind": "lora", "train": "adapters", "stages": [1, 1]}, "stages=\\[1, 1\\] lists a stage twice"),
        ({"kind": "lora", "train": "adapters", "stages": [-1]}, "stages"),
        ({"kind": "lora", "train": "adapters", "stages": "last"}, "stages"),
        ({"kind": "vida", "train": "adapters", "low_rank": 8, "high_rank": 8}, "low_rank=8 must be below high_rank=8"),
        ({"kind": "adaptformer", "train": "adapters", "rank": 4}, "rank: not an option of kind='adaptformer'"),
        ({"kind": "lora", "train": "adapters", "bottleneck": 32, "vida_scale": 2.0}, "bottleneck, vida_scale: not"),
        ({"train": "adapters"}, "train='adapters' needs adapters"),
        ({"kind": "lora", "train": "decoder"}, "kind='lora' with train='decoder'"),
        ({"kind": "lora", "train": "adapters", "rnak": 4}, "rnak"),
        ({"train": "backbone"}, "train"),
    ],
)
def test_config_rejects_bad_values_naming_the_key(values: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AdaptersConfig(**values)


def test_trainable_patterns() -> None:
    names = ["backbone.x.adaptformer.down.weight"]
    assert trainable_patterns(AdaptersConfig(), []) == "all"
    assert trainable_patterns(AdaptersConfig(kind="lora"), names) == "all"
    assert trainable_patterns(AdaptersConfig(train="decoder"), []) == ["head"]
    assert trainable_patterns(AdaptersConfig(kind="lora", train="adapters"), names) == ["head", *names]
    assert trainable_patterns(AdaptersConfig(kind="lora", train="adapters"), names, head=("neck", "head")) == [
        "neck", "head", *names]  # fmt: skip
    with pytest.raises(ValueError, match="no adapters"):
        trainable_patterns(AdaptersConfig(kind="lora", train="adapters"), [])


# --- what trains, optimizer groups, the teacher copy -----------------------------------------------


def adapted_mit(kind: str = "adaptformer") -> tuple[Segmentor, list[str]]:
    model = mit_segmentor()
    config = AdaptersConfig(kind=kind, train="adapters")
    names = inject_adapters(model, config)
    set_trainable(model, trainable_patterns(config, names))
    return model, names


@pytest.mark.parametrize("kind", ["adaptformer", "lora", "vida"])
def test_train_adapters_gives_gradients_to_adapters_and_head_only(kind: str) -> None:
    model, names = adapted_mit(kind)
    model.train()
    model(images()).square().mean().backward()
    head = {name for name, _ in model.named_parameters() if name.startswith("head.")}
    for name, param in model.named_parameters():
        trains = name in head or name in names
        assert param.requires_grad == trains, name
        assert (param.grad is not None) == trains, name
    up = [name for name in names if ".up." in name]
    assert all(model.get_parameter(name).grad.abs().sum() > 0 for name in up)  # zero-initialised, yet learning
    grouped = {name for group in param_groups(model) for name in group["names"]}
    assert grouped == head | set(names)


def test_train_decoder_freezes_the_backbone_which_runs_without_autograd() -> None:
    model = mit_segmentor()
    config = AdaptersConfig(train="decoder")
    set_trainable(model, trainable_patterns(config, inject_adapters(model, config)))
    model.train()
    assert not model.backbone.training
    assert not model.backbone_maps(images())[-1].requires_grad
    assert {name for group in param_groups(model) for name in group["names"]} == {
        name for name, _ in model.named_parameters() if name.startswith("head.")}  # fmt: skip


def test_teacher_copy_keeps_adapters_frozen_and_lr_multipliers_group_each_parameter_once() -> None:
    model, names = adapted_mit("lora")
    method = DACS(model)  # the teacher is a deep copy of the adapted, already frozen student
    student = dict(method.student.named_parameters())
    teacher = dict(method.teacher.named_parameters())
    assert list(teacher) == list(student)
    assert all(not teacher[name].requires_grad for name in teacher)
    assert all(student[name].requires_grad for name in names)
    assert adapter_parameter_names(method.teacher) == names
    x = images()
    method.eval()
    with torch.no_grad():
        assert torch.equal(method.teacher(x), method.student(x))
    ema_update_parameters_(method.teacher, method.student, 0.5)  # same parameters, one to one

    groups = param_groups(method, {"student.head": 10.0, "student.backbone": 0.1})
    ids = [id(param) for group in groups for param in group["params"]]
    assert len(ids) == len(set(ids))
    trainable = [param for param in method.parameters() if param.requires_grad]
    assert len(ids) == len(trainable)
    scale = {name: group["lr_scale"] for group in groups for name in group["names"]}
    assert {scale[f"student.{name}"] for name in names} == {0.1}
    assert {value for name, value in scale.items() if name.startswith("student.head.")} == {10.0}
    assert not any(name.startswith("teacher.") for name in scale)


def test_deep_copy_keeps_adapters_and_their_frozen_state() -> None:
    model, names = adapted_mit("vida")
    clone = copy.deepcopy(model)
    assert adapter_parameter_names(clone) == names
    assert {n: p.requires_grad for n, p in clone.named_parameters()} == {
        n: p.requires_grad for n, p in model.named_parameters()}  # fmt: skip
    with torch.no_grad():
        clone.get_parameter(names[1]).add_(1.0)  # the copy owns its own tensors
    assert not torch.equal(clone.get_parameter(names[1]), model.get_parameter(names[1]))

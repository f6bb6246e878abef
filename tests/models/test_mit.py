"""MiT B0-B5 (SegFormer's encoder as timm's PVTv2): sizes, maps, NVlabs checkpoints, decoder width."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from torch import nn

from pretrainlab.models.backbones import BACKBONES, build_backbone
from pretrainlab.models.backbones.base import Backbone
from pretrainlab.models.backbones.mit import MiTBackbone, MiTBackboneConfig, nvlabs_to_timm
from pretrainlab.models.checkpoint import load_backbone_checkpoint

VARIANTS = ["b0", "b1", "b2", "b3", "b4", "b5"]
# NVlabs' MixVisionTransformer (mix_transformer.py, classifier commented out), in_chans 3, counted exactly
NVLABS_PARAMETERS = {
    "b0": 3_319_392,
    "b1": 13_151_424,
    "b2": 24_196_288,
    "b3": 44_072_128,
    "b4": 60_842_688,
    "b5": 81_443_008,
}
PAPER_ENCODER_MILLIONS = {"b0": 3.4, "b1": 13.1, "b2": 24.2, "b3": 44.0, "b4": 60.8, "b5": 81.4}  # SegFormer Table 1
WIDTHS = {"b0": [32, 64, 160, 256], "b1": [64, 128, 320, 512], "b2": [64, 128, 320, 512]}
DEPTHS = {"b0": [2, 2, 2, 2], "b1": [2, 2, 2, 2], "b2": [3, 4, 6, 3]}
SR_RATIOS = [8, 4, 2, 1]


@functools.cache
def _eval_model(variant: str, in_chans: int = 3) -> MiTBackbone:
    torch.manual_seed(0)
    return MiTBackbone(variant, in_chans=in_chans).eval()  # type: ignore[arg-type]


@pytest.mark.parametrize("variant", VARIANTS)
def test_parameter_counts_match_nvlabs_and_the_paper(variant: str) -> None:
    with torch.device("meta"):  # no memory, no init: B5 in well under a second
        model = MiTBackbone(variant)  # type: ignore[arg-type]
    num_parameters = sum(p.numel() for p in model.parameters())
    assert num_parameters == NVLABS_PARAMETERS[variant]
    assert abs(num_parameters / 1e6 - PAPER_ENCODER_MILLIONS[variant]) <= 0.1


def test_mit_configuration_in_every_block() -> None:
    """The settings that distinguish MiT from timm's PVTv2 presets, read off the built B2."""
    model = _eval_model("b2").model
    for stage, (width, depth, ratio) in enumerate(zip(WIDTHS["b2"], DEPTHS["b2"], SR_RATIOS)):
        blocks = model.stages[stage].blocks
        assert len(blocks) == depth
        for block in blocks:
            assert block.mlp.fc1.out_features == 4 * width  # MLP ratio 4 in every stage
            assert block.attn.q.bias is not None and block.attn.kv.bias is not None
            assert block.norm1.eps == block.norm2.eps == 1e-6
            assert (block.attn.sr.kernel_size[0] if block.attn.sr is not None else 1) == ratio
        assert model.stages[stage].norm.eps == 1e-6
    assert model.patch_embed.proj.kernel_size == (7, 7) and model.patch_embed.proj.stride == (4, 4)
    assert model.stages[1].downsample.proj.kernel_size == (3, 3) and model.stages[1].downsample.proj.stride == (2, 2)
    rates = [getattr(b.drop_path1, "drop_prob", 0.0) for s in model.stages for b in s.blocks]  # first: Identity
    assert rates == pytest.approx(torch.linspace(0, 0.1, sum(DEPTHS["b2"])).tolist())


@pytest.mark.parametrize("variant", ["b0", "b1"])
def test_maps_strides_and_channels(variant: str) -> None:
    model = _eval_model(variant)
    with torch.no_grad():
        features = model(torch.randn(2, 3, 64, 64))
    assert isinstance(model, Backbone)
    assert model.strides == [4, 8, 16, 32]
    assert model.out_channels == WIDTHS[variant]
    expected = [(2, c, 64 // s, 64 // s) for c, s in zip(WIDTHS[variant], [4, 8, 16, 32])]
    assert [tuple(m.shape) for m in features.maps] == expected
    assert features.pooled.shape == (2, model.embed_dim) and model.embed_dim == WIDTHS[variant][-1]
    assert torch.allclose(features.pooled, features.maps[-1].mean(dim=(2, 3)), atol=1e-6)
    assert features.tokens is None and model.patch_size is None


@pytest.mark.parametrize("in_chans", [1, 4])
def test_input_channels(in_chans: int) -> None:
    config = MiTBackboneConfig.model_validate({"name": "mit", "variant": "b0", "in_chans": in_chans})
    model = build_backbone(config)
    features = model(torch.randn(1, in_chans, 64, 64))
    assert model.in_chans == in_chans
    assert model.model.patch_embed.proj.in_channels == in_chans
    assert [m.shape[-1] for m in features.maps] == [16, 8, 4, 2]
    with pytest.raises(ValueError, match=f"built for {in_chans} input channels"):
        model(torch.randn(1, 3, 64, 64))


@pytest.mark.parametrize("variant, decoder_width", [("b0", 256), ("b1", 256), ("b2", 768), ("b5", 768)])
def test_decoder_width(variant: str, decoder_width: int) -> None:
    with torch.device("meta"):
        model = build_backbone(MiTBackboneConfig(name="mit", variant=variant))  # type: ignore[arg-type]
    assert model.decoder_width == decoder_width


def test_config_registry_and_errors() -> None:
    assert BACKBONES.get("mit").config is MiTBackboneConfig
    assert [MiTBackboneConfig(name="mit", variant=v).describe() for v in VARIANTS] == [  # type: ignore[arg-type]
        f"MiT-B{i}" for i in range(6)
    ]
    with pytest.raises(ValueError, match="did you mean 'b2'"):
        MiTBackbone("b2 ")  # type: ignore[arg-type]


def _official_name(timm_key: str) -> str:
    """NVlabs' name of a timm PVTv2 key, written out independently of `nvlabs_to_timm`."""
    parts = timm_key.split(".")
    if parts[0] == "patch_embed":
        return "patch_embed1." + ".".join(parts[1:])
    assert parts[0] == "stages", timm_key
    stage = int(parts[1]) + 1
    if parts[2] == "downsample":
        return f"patch_embed{stage}." + ".".join(parts[3:])
    if parts[2] == "norm":
        return f"norm{stage}." + ".".join(parts[3:])
    assert parts[2] == "blocks", timm_key
    rest = ".".join(parts[4:]).replace("mlp.dwconv.", "mlp.dwconv.dwconv.")
    return f"block{stage}.{parts[3]}.{rest}"


def _official_names_from_the_pattern(depths: list[int]) -> set[str]:
    """Every weight name of an NVlabs `mit_b*` backbone, enumerated from its module layout."""
    names = set()
    block_modules = ["norm1", "attn.q", "attn.kv", "attn.proj", "norm2", "mlp.fc1", "mlp.dwconv.dwconv", "mlp.fc2"]
    for stage, depth in enumerate(depths, start=1):
        modules = [f"patch_embed{stage}.proj", f"patch_embed{stage}.norm", f"norm{stage}"]
        for j in range(depth):
            reduction = ["attn.sr", "attn.norm"] if stage < 4 else []  # sr_ratio 1 in stage 4
            modules += [f"block{stage}.{j}.{m}" for m in block_modules + reduction]
        names |= {f"{module}.{kind}" for module in modules for kind in ("weight", "bias")}
    return names


def _random_official_state(model: MiTBackbone) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(NVlabs-named random weights, the same tensors under timm's names)."""
    generator = torch.Generator().manual_seed(1)
    timm_state = {k: torch.randn(v.shape, generator=generator) for k, v in model.model.state_dict().items()}
    official = {_official_name(k): v for k, v in timm_state.items()}
    return official, timm_state


def _assert_landed(model: MiTBackbone, timm_state: dict[str, torch.Tensor]) -> None:
    own = model.model.state_dict()
    assert all(torch.equal(own[key], value) for key, value in timm_state.items())


def test_hand_written_names_are_the_official_ones() -> None:
    official, timm_state = _random_official_state(_eval_model("b0"))
    assert set(official) == _official_names_from_the_pattern(DEPTHS["b0"])
    assert nvlabs_to_timm(official).keys() == timm_state.keys()
    assert nvlabs_to_timm({"head.weight": 0}) == {"head.weight": 0}


@pytest.mark.parametrize("variant", ["b0", "b2"])
def test_segformer_checkpoint_loads_completely(variant: str, tmp_path: Path) -> None:
    model = MiTBackbone(variant)  # type: ignore[arg-type]
    official, timm_state = _random_official_state(model)
    decode_head = {"decode_head.linear_c4.proj.weight": torch.randn(256, 8), "decode_head.linear_pred.bias": torch.randn(150)}
    state_dict = {**{"backbone." + key: value for key, value in official.items()}, **decode_head}
    path = tmp_path / f"segformer.{variant}.512x512.ade.160k.pth"
    torch.save({"meta": {"iter": 160000}, "state_dict": state_dict}, path)

    report = load_backbone_checkpoint(model, path)
    assert (report.missing, report.unexpected, report.mismatched) == ([], [], [])
    assert (report.target, report.container, report.prefix) == ("model.model", ["state_dict"], "backbone.")
    assert sorted(report.ignored) == sorted(decode_head)
    assert len(report.loaded) == len(timm_state)
    _assert_landed(model, timm_state)


def test_imagenet_mit_checkpoint_ignores_the_classifier(tmp_path: Path) -> None:
    model = MiTBackbone("b0")
    official, timm_state = _random_official_state(model)
    path = tmp_path / "mit_b0.pth"
    torch.save({**official, "head.weight": torch.randn(1000, 256), "head.bias": torch.randn(1000)}, path)

    report = load_backbone_checkpoint(model, path, strict=True)
    assert report.is_complete and report.prefix == ""
    assert sorted(report.ignored) == ["head.bias", "head.weight"]
    _assert_landed(model, timm_state)


def test_own_checkpoint_round_trip_is_untouched_by_the_renames(tmp_path: Path) -> None:
    source, target = MiTBackbone("b0"), MiTBackbone("b0")
    path = tmp_path / "last.pth"
    torch.save(source.state_dict(), path)
    report = load_backbone_checkpoint(target, path, strict=True)
    assert report.target == "model" and report.is_complete
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values()))


def test_drop_path_is_off_in_eval_and_dropout_free() -> None:
    model = _eval_model("b0")
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        first, second = model(images).maps[-1], model(images).maps[-1]
    assert torch.equal(first, second)
    assert not any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules())

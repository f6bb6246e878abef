"""Checkpoint import: DINO / DINOv2 / MAE / timm / pretrainlab layouts, position-embedding
interpolation, and the missing / unexpected / mismatched / ignored report."""

from __future__ import annotations

import argparse
import copy
import functools
import logging
import pathlib
import sys
from pathlib import Path

import pytest
import timm
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn
from torch.nn import functional as F

from pretrainlab.models.backbones.sebnet import SEBNet
from pretrainlab.models.checkpoint import load_backbone_checkpoint


class Wrapper(nn.Module):
    """Stands in for pretrainlab's TimmBackbone: the timm model lives at `.model`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model


@functools.cache
def _vit_tiny_template(img_size: int | tuple[int, int], in_chans: int) -> nn.Module:
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=img_size, num_classes=0, in_chans=in_chans
    )


def vit_tiny(img_size: int | tuple[int, int], in_chans: int = 3) -> nn.Module:
    """A fresh timm ViT-Ti/16 (copied from a cached one: timm's initialisation is the slow part)."""
    return copy.deepcopy(_vit_tiny_template(img_size, in_chans))


@functools.cache
def _source_state() -> dict[str, Tensor]:
    """State dict of a randomly initialised timm ViT-Ti/16 at 224 px (pos_embed (1, 1 + 14 * 14, 192))."""
    torch.manual_seed(1)
    return {k: v.clone() for k, v in vit_tiny(224).state_dict().items()}


def dino_checkpoint(backbone: dict[str, Tensor]) -> dict[str, object]:
    """The layout of an official DINO training checkpoint (main_dino.py), teacher DDP-wrapped."""
    head = {
        "head.mlp.0.weight": torch.randn(64, 192),
        "head.mlp.0.bias": torch.randn(64),
        "head.last_layer.weight_g": torch.randn(256, 1),
        "head.last_layer.weight_v": torch.randn(256, 64),
    }
    teacher = {f"module.backbone.{k}": v for k, v in backbone.items()} | {f"module.{k}": v for k, v in head.items()}
    student = {k: v + 1.0 for k, v in teacher.items()}
    return {
        "teacher": teacher,
        "student": student,
        "epoch": 3,
        "args": argparse.Namespace(arch="vit_tiny", patch_size=16, out_dim=256),
        "dino_loss": {"center": torch.zeros(1, 256)},
    }


def test_dino_checkpoint_into_vit_at_96px(tmp_path: Path) -> None:
    source = _source_state()
    path = tmp_path / "dino.pth"
    torch.save(dino_checkpoint(source), path)
    model = Wrapper(vit_tiny(96))
    report = load_backbone_checkpoint(model, path, layout="dino")

    assert report.target == "model.model"
    assert report.container == ["teacher"]
    assert report.prefix == "module.backbone."
    assert sorted(report.loaded) == sorted(model.model.state_dict())
    assert report.missing == [] and report.unexpected == [] and report.mismatched == []
    assert sorted(report.ignored) == sorted(
        f"module.head.{k}" for k in ("mlp.0.weight", "mlp.0.bias", "last_layer.weight_g", "last_layer.weight_v")
    )
    assert report.interpolated == ["pos_embed"]
    assert report.is_complete

    loaded = model.model.state_dict()
    for key, value in source.items():  # the teacher's values, not the student's (+1)
        if key != "pos_embed":
            torch.testing.assert_close(loaded[key], value, msg=key)
    assert loaded["pos_embed"].shape == (1, 1 + 6 * 6, 192)
    torch.testing.assert_close(loaded["pos_embed"][:, :1], source["pos_embed"][:, :1])  # class position kept
    grid = source["pos_embed"][:, 1:].reshape(1, 14, 14, 192).permute(0, 3, 1, 2)  # (1, D, 14, 14)
    expected = F.interpolate(grid, size=(6, 6), mode="bicubic", align_corners=False, antialias=True)
    torch.testing.assert_close(loaded["pos_embed"][:, 1:], expected.permute(0, 2, 3, 1).reshape(1, 36, 192))

    text = report.format()
    assert "module.head.last_layer.weight_v" in text
    assert "pos_embed: grid 14x14 -> 6x6 (bicubic)" in text
    assert "loaded       150 / 150" in text
    with torch.no_grad():
        assert torch.isfinite(model.model(torch.randn(1, 3, 96, 96))).all()


def test_pos_embed_rows_and_columns_on_a_non_square_grid(tmp_path: Path) -> None:
    """Channel 0 holds the row index, channel 1 the column index; after resampling 14×14 to
    6×8 (96×128 px) rows must still vary along H only and columns along W only."""
    state = dict(_source_state())
    rows, cols = torch.meshgrid(torch.arange(14.0), torch.arange(14.0), indexing="ij")
    pos = torch.zeros(1, 1 + 196, 192)
    pos[0, 1:, 0] = rows.flatten()
    pos[0, 1:, 1] = cols.flatten()
    state["pos_embed"] = pos
    path = tmp_path / "plain.pth"
    torch.save(state, path)
    model = vit_tiny((96, 128))
    report = load_backbone_checkpoint(model, path, layout="timm")
    assert report.target == "model" and report.interpolated == ["pos_embed"]
    grid = model.pos_embed.detach()[0, 1:].reshape(6, 8, 192)  # (Gh, Gw, D)
    row_channel, col_channel = grid[..., 0], grid[..., 1]
    torch.testing.assert_close(row_channel, row_channel[:, :1].expand(6, 8))  # constant along W
    torch.testing.assert_close(col_channel, col_channel[:1, :].expand(6, 8))  # constant along H
    assert (row_channel[1:, 0] > row_channel[:-1, 0]).all()
    assert (col_channel[0, 1:] > col_channel[0, :-1]).all()


def test_mismatched_key_is_named_and_strict_raises(tmp_path: Path) -> None:
    path = tmp_path / "vit.pth"
    torch.save({"model": _source_state()}, path)  # 3-channel patch embedding
    model = vit_tiny(224, in_chans=4)
    untouched = model.patch_embed.proj.weight.detach().clone()
    before = model.blocks[0].attn.qkv.weight.detach().clone()

    with pytest.raises(ValueError, match=r"mismatched.*patch_embed\.proj\.weight: checkpoint \(192, 3, 16, 16\)"):
        load_backbone_checkpoint(model, path, strict=True)
    torch.testing.assert_close(model.blocks[0].attn.qkv.weight, before)  # strict leaves the model untouched

    report = load_backbone_checkpoint(model, path)
    assert report.mismatched == [("patch_embed.proj.weight", (192, 3, 16, 16), (192, 4, 16, 16))]
    assert "patch_embed.proj.weight" not in report.loaded
    assert not report.is_complete
    torch.testing.assert_close(model.patch_embed.proj.weight, untouched)
    torch.testing.assert_close(model.blocks[0].attn.qkv.weight, _source_state()["blocks.0.attn.qkv.weight"])
    assert "patch_embed.proj.weight: checkpoint (192, 3, 16, 16) vs model (192, 4, 16, 16)" in report.format()


def test_missing_and_unexpected_keys_are_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = dict(_source_state())
    del state["blocks.1.norm1.weight"]
    state["blocks.1.extra.weight"] = torch.zeros(3)
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with caplog.at_level(logging.INFO, logger="pretrainlab.models.checkpoint"):
        report = load_backbone_checkpoint(Wrapper(vit_tiny(224)), path)
    assert report.missing == ["blocks.1.norm1.weight"]
    assert report.unexpected == ["blocks.1.extra.weight"]
    assert len(report.loaded) == 149
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "blocks.1.norm1.weight" in warnings[0].getMessage()
    with pytest.raises(ValueError, match=r"missing \['blocks\.1\.norm1\.weight'\]; unexpected \['blocks\.1\.extra"):
        load_backbone_checkpoint(Wrapper(vit_tiny(224)), path, strict=True)


def test_complete_load_logs_at_info(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "plain.pth"
    torch.save(_source_state(), path)
    with caplog.at_level(logging.INFO, logger="pretrainlab.models.checkpoint"):
        load_backbone_checkpoint(Wrapper(vit_tiny(224)), path, strict=True)
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert "loaded       150 / 150 weights of model.model" in caplog.records[0].getMessage()


def test_mae_checkpoint_drops_decoder(tmp_path: Path) -> None:
    state = dict(_source_state())
    state |= {
        "mask_token": torch.zeros(1, 1, 128),
        "decoder_embed.weight": torch.zeros(128, 192),
        "decoder_pos_embed": torch.zeros(1, 197, 128),
        "decoder_blocks.0.norm1.weight": torch.zeros(128),
        "decoder_pred.weight": torch.zeros(768, 128),
    }
    path = tmp_path / "mae.pth"
    torch.save({"model": state, "epoch": 799, "args": argparse.Namespace(model="mae_vit_tiny")}, path)
    report = load_backbone_checkpoint(Wrapper(vit_tiny(224)), path, layout="mae", strict=True)
    assert report.container == ["model"]
    decoder = ["decoder_embed.weight", "decoder_pos_embed", "decoder_blocks.0.norm1.weight", "decoder_pred.weight"]
    assert sorted(report.ignored) == sorted(["mask_token", *decoder])
    assert len(report.loaded) == 150


def _tiny_registers_vit() -> VisionTransformer:
    """A timm ViT laid out like timm's DINOv2-with-registers models (no_embed_class, layer scale)."""
    return VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=0,
        reg_tokens=4, no_embed_class=True, init_values=1e-5,
    )  # fmt: skip


def test_dinov2_registers_checkpoint_gives_the_same_network(tmp_path: Path) -> None:
    """Write the official DINOv2 layout of a timm model by hand (chunked blocks, register_tokens,
    class position inside pos_embed, dino / ibot heads) and check the loaded model computes the same."""
    torch.manual_seed(2)
    source = _tiny_registers_vit().eval()
    with torch.no_grad():
        source.pos_embed.normal_()
        source.reg_token.normal_()
        source.cls_token.normal_()
    state = source.state_dict()
    class_position = torch.randn(1, 1, 32)
    dinov2: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith("blocks."):
            _, index, rest = key.split(".", 2)
            key = f"blocks.{index}.{index}.{rest}"  # chunk c holds global block c here
        dinov2[key] = value
    dinov2["register_tokens"] = dinov2.pop("reg_token")
    dinov2["cls_token"] = state["cls_token"] - class_position
    dinov2["pos_embed"] = torch.cat([class_position, state["pos_embed"]], dim=1)  # (1, 1 + 16, 32)
    dinov2["mask_token"] = torch.zeros(1, 32)
    teacher = {f"backbone.{k}": v for k, v in dinov2.items()}
    teacher |= {"dino_head.mlp.0.weight": torch.randn(8, 32), "ibot_head.mlp.0.weight": torch.randn(8, 32)}
    path = tmp_path / "teacher_checkpoint.pth"
    torch.save({"teacher": teacher}, path)

    model = _tiny_registers_vit().eval()
    report = load_backbone_checkpoint(model, path, layout="dinov2", strict=True)
    assert report.prefix == "backbone."
    assert sorted(report.interpolated) == ["cls_token", "pos_embed"]
    assert sorted(report.ignored) == ["backbone.mask_token", "dino_head.mlp.0.weight", "ibot_head.mlp.0.weight"]
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(images), source.forward_features(images))

    larger = VisionTransformer(
        img_size=48, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=0,
        reg_tokens=4, no_embed_class=True, init_values=1e-5,
    )  # fmt: skip
    report = load_backbone_checkpoint(larger, path, layout="dinov2", strict=True)
    assert report.notes == [
        "cls_token: + pos_embed[:, 0] (class position folded in; the model has no_embed_class)",
        "pos_embed: grid 4x4 -> 6x6 (bicubic)",
    ]
    assert larger.pos_embed.shape == (1, 36, 32)
    torch.testing.assert_close(larger.cls_token, state["cls_token"])


def test_pretrainlab_lightning_checkpoint_into_sebnet_prefers_teacher(tmp_path: Path) -> None:
    torch.manual_seed(3)
    teacher = SEBNet("s")
    with torch.no_grad():
        for buffer in teacher.buffers():
            if buffer.is_floating_point():
                buffer.uniform_(0.5, 1.5)  # running stats that differ from a fresh model's
    state = {f"method.teacher.backbone.{k}": v for k, v in teacher.state_dict().items()}
    state |= {f"method.student.backbone.{k}": v.float() + 1 for k, v in teacher.state_dict().items()}
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": state, "epoch": 1, "global_step": 10}, path)
    model = SEBNet("s")
    report = load_backbone_checkpoint(model, path, layout="pretrainlab", strict=True)
    assert report.target == "model" and report.prefix == "method.teacher.backbone."
    assert len(report.ignored) == len(teacher.state_dict())  # the student
    for key, value in teacher.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, msg=key)


def test_prefix_remap(tmp_path: Path) -> None:
    state = {k.replace("blocks.", "transformer.resblocks."): v for k, v in _source_state().items()}
    path = tmp_path / "renamed.pth"
    torch.save(state, path)
    report = load_backbone_checkpoint(Wrapper(vit_tiny(224)), path)
    assert len(report.unexpected) == len(report.missing) > 100
    report = load_backbone_checkpoint(
        Wrapper(vit_tiny(224)), path, prefix_remap={"transformer.resblocks.": "blocks."}, strict=True
    )
    assert len(report.loaded) == 150


def test_safetensors_round_trip(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "vit.safetensors"
    save_file({f"encoder.{k}": v.contiguous() for k, v in _source_state().items()}, str(path))
    model = Wrapper(vit_tiny(224))
    report = load_backbone_checkpoint(model, path, strict=True)
    assert report.prefix == "encoder." and len(report.loaded) == 150
    torch.testing.assert_close(model.model.norm.weight, _source_state()["norm.weight"])


def test_safetensors_missing_package_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "vit.safetensors"
    path.write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(ImportError, match="pip install safetensors"):
        load_backbone_checkpoint(Wrapper(vit_tiny(224)), path)


def test_bad_files_and_arguments(tmp_path: Path) -> None:
    model = Wrapper(vit_tiny(224))
    with pytest.raises(FileNotFoundError, match="nowhere.pth does not exist"):
        load_backbone_checkpoint(model, tmp_path / "nowhere.pth")
    path = tmp_path / "plain.pth"
    torch.save(_source_state(), path)
    with pytest.raises(ValueError, match=r"unknown checkpoint layout 'dinov3'; did you mean 'dinov2'\?"):
        load_backbone_checkpoint(model, path, layout="dinov3")  # type: ignore[arg-type]
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"model": _source_state(), "output_dir": pathlib.PurePosixPath("/runs")}, unsafe)
    with pytest.raises(ValueError, match=r"weights_only=True"):
        load_backbone_checkpoint(model, unsafe)
    no_tensors = tmp_path / "empty.pth"
    torch.save({"epoch": 3, "step": 10}, no_tensors)
    with pytest.raises(ValueError, match=r"no state dict found .* keys \['epoch', 'step'\]"):
        load_backbone_checkpoint(model, no_tensors)

"""`pretrainlab export`: a four-channel MAE run's backbone becomes a plain 3-channel ViT file plus the
backbone config that builds it, loading with an empty missing / unexpected report."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_mae_overrides

from pretrainlab.cli import main
from pretrainlab.config import load_config
from pretrainlab.models.backbones.base import BACKBONES, build_backbone
from pretrainlab.models.checkpoint import load_backbone_checkpoint
from pretrainlab.study.run import load_pretrained_method, pretrain


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_export_of_a_four_channel_mae_loads_as_a_plain_vit(tiny_synthetic: Path, tmp_path: Path, suffix: str) -> None:
    overrides = tiny_mae_overrides(tiny_synthetic, tmp_path, name="mae4", **{
        "engine.max_epochs": 1, "method.mask_method": "four_channels", "study.phases": [{"name": "pretrain"}]})
    run = pretrain(load_config(None, overrides)).path
    out = tmp_path / f"backbone{suffix}"
    assert main(["-q", "export", "--run", str(run), "--out", str(out)]) == 0

    description = yaml.safe_load(out.with_suffix(".yaml").read_text())
    assert description["backbone"]["in_chans"] == 3 and description["epoch"] == 1 and description["method"] == "mae"
    plain = build_backbone(BACKBONES.get("timm").config.model_validate(description["backbone"]))
    report = load_backbone_checkpoint(plain, out)
    assert report.is_complete and not report.ignored, report.format()

    _, method, _ = load_pretrained_method(run)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = method.eval_backbone().eval()(images).pooled
        four = method.encoder.eval()(torch.cat([images, torch.ones(2, 1, 64, 64)], dim=1)).pooled
        torch.testing.assert_close(plain.eval()(images).pooled, expected, atol=1e-6, rtol=0)
        torch.testing.assert_close(expected, four, atol=1e-5, rtol=0)

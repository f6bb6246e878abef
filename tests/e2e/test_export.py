"""`pretrainlab export`: a four-channel MAE run's backbone becomes a plain 3-channel ViT file plus the
backbone config that builds it, loading with an empty missing / unexpected report."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY_SYNTHETIC, _yaml_inline

from pretrainlab.cli import main
from pretrainlab.config import load_config
from pretrainlab.models.backbones.base import BACKBONES, build_backbone
from pretrainlab.models.checkpoint import load_backbone_checkpoint
from pretrainlab.study.run import load_pretrained_method, pretrain


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_export_of_a_four_channel_mae_loads_as_a_plain_vit(tiny_synthetic: Path, tmp_path: Path, suffix: str) -> None:
    values = {
        "name": "mae4", "data.root": str(tiny_synthetic), "data.synthetic": TINY_SYNTHETIC, "data.batch_size": 2,
        "data.num_workers": 0, "output_root": str(tmp_path), "engine.precision": "32", "engine.progress_bar": False,
        "engine.max_epochs": 1, "optim.warmup_epochs": 0, "eval.knn.every_n_epochs": 0,
        "backbone.arch": "vit_tiny_patch16_224", "backbone.img_size": 64, "backbone.patch_size": 8,
        "backbone.embed_dim": 32, "backbone.depth": 1, "backbone.num_heads": 2, "method.name": "mae",
        "method.mask_method": "four_channels", "method.images": "segmentation/images/training",
        "method.masks.root": "segmentation/sam_masks/training", "method.decoder.preset": "tiny",
        "study.phases": [{"name": "pretrain"}],
    }  # fmt: skip
    run = pretrain(load_config(None, [f"{key}={_yaml_inline(value)}" for key, value in values.items()])).path
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

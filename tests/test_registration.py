"""A backbone registered from outside the package (the README's worked example) runs a study."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pytest
from conftest import tiny_run_overrides
from torch import Tensor, nn

from pretrainlab.cli import main
from pretrainlab.config import ConfigError, load_config
from pretrainlab.models.backbones.base import BACKBONES, Backbone, BackboneConfig, Features, global_average


class TinyCNNConfig(BackboneConfig):
    name: Literal["tiny_cnn"]
    width: int = 16


class TinyCNN(Backbone):
    def __init__(self, in_chans: int, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, width, 3, 2, 1)
        self.in_chans, self.embed_dim, self.out_channels, self.strides, self.patch_size = in_chans, width, [width], [2], None

    def forward(self, images: Tensor) -> Features:  # (B, C, H, W)
        feature_map = self.conv(images)  # (B, width, H / 2, W / 2)
        return Features(pooled=global_average(feature_map), maps=[feature_map])


@BACKBONES.register(TinyCNNConfig)
def build_tiny_cnn(config: TinyCNNConfig, in_chans: int) -> TinyCNN:
    return TinyCNN(in_chans, config.width)


def test_registered_backbone_is_validated_and_runs_a_study(tiny_synthetic: Path, tmp_path: Path) -> None:
    overrides = [o for o in tiny_run_overrides(tiny_synthetic, tmp_path, **{"method.name": "simclr"})
                 if not o.startswith("backbone.")]  # fmt: skip
    overrides.append("backbone={name: tiny_cnn, width: 12}")
    assert load_config(None, overrides).backbone.width == 12
    with pytest.raises(ConfigError, match="backbone.widht: unknown key; did you mean 'width'"):
        load_config(None, [*overrides, "backbone.widht=3"])
    with pytest.raises(ConfigError, match="backbone.name: unknown backbone 'tiny_cn'; did you mean 'tiny_cnn'"):
        load_config(None, [*overrides, "backbone.name=tiny_cn"])
    assert main(["-q", "study", *[], "configs/quickstart.yaml", *overrides]) == 0
    summary = json.loads((tmp_path / "quickstart" / "summary.json").read_text())
    assert summary["backbone"] == "tiny_cnn" and summary["num_params"] == 3 * 12 * 9 + 12

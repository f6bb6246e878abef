"""A backbone (the README's worked example), a head and a method registered from outside the package run a study."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch
from conftest import tiny_run_overrides
from pydantic import Field
from torch import Tensor, nn
from torch.nn import functional as F

from pretrainlab.cli import main
from pretrainlab.config import ConfigError, load_config
from pretrainlab.data.loaders import views_train_data
from pretrainlab.data.train_data import TrainData
from pretrainlab.data.transforms.views import TwoViews
from pretrainlab.engine.schedules import StepValues
from pretrainlab.methods.base import METHODS, Method, MethodConfig, build_trunk
from pretrainlab.models.backbones.base import BACKBONES, Backbone, BackboneConfig, Features, global_average
from pretrainlab.models.heads.base import HEADS, HeadConfig, build_head


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


class TinyProjectionConfig(HeadConfig):
    name: Literal["tiny_projection"]
    out_dim: int = Field(8, ge=1)


@HEADS.register(TinyProjectionConfig)
def build_tiny_projection(config: TinyProjectionConfig, in_dim: int) -> nn.Linear:
    return nn.Linear(in_dim, config.out_dim)


class PullTogether(Method):
    """Two views of an image, pulled together on the unit sphere (a toy: it may collapse)."""

    def __init__(self, backbone: Backbone, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def training_step(self, batch: tuple[list[Tensor], Tensor], step: StepValues) -> dict[str, Tensor]:
        (first, second), _ = batch
        z = F.normalize(self.head(self.backbone(torch.cat([first, second])).pooled), dim=1)  # (2B, P)
        distance = (z[: len(first)] - z[len(first) :]).square().sum(1).mean()
        return {"loss": (0.5 + step["pull_scale"]) * distance, "distance": distance.detach()}

    def eval_backbone(self) -> Backbone:
        return self.backbone


class PullTogetherConfig(MethodConfig):
    name: Literal["pull_together"]
    head: HEADS.config_type("tiny_projection") = Field(default_factory=HEADS.default_factory("tiny_projection"))  # type: ignore[valid-type]

    def schedules(self, total_iters: int, steps_per_epoch: int) -> dict[str, np.ndarray]:
        return {"pull_scale": np.linspace(0.0, 1.0, total_iters)}

    def train_data(self, config) -> TrainData:  # noqa: ANN001 - Config
        mean, std = config.data.mean_std
        return views_train_data(config, TwoViews(mean=mean, std=std))


@METHODS.register(PullTogetherConfig)
def build_pull_together(config) -> PullTogether:  # noqa: ANN001 - Config
    trunk = build_trunk(config)
    return PullTogether(trunk.backbone, build_head(config.method.head, trunk.head_in_dim))


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


def test_registered_method_and_head_run_a_study(tiny_synthetic: Path, tmp_path: Path) -> None:
    method = {"name": "pull_together", "head": {"name": "tiny_projection", "out_dim": 6}}
    overrides = tiny_run_overrides(tiny_synthetic, tmp_path, name="pull", method=method)
    with pytest.raises(ConfigError, match="method.head.name: unknown head 'tiny_projectin'"):
        load_config(None, [*overrides, "method.head.name=tiny_projectin"])
    assert main(["-q", "study", "configs/quickstart.yaml", *overrides]) == 0
    steps = [json.loads(line) for line in (tmp_path / "pull" / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    logged = [m for m in steps if "train/pull_scale" in m]
    total_iters = 2 * 96 // 16  # 2 epochs of 6 batches
    last = logged[-1]  # the method's own schedule, as the step received it
    assert last["train/pull_scale"] == pytest.approx(last["step"] / (total_iters - 1), rel=1e-5)
    assert last["train/loss"] == pytest.approx((0.5 + last["train/pull_scale"]) * last["train/distance"], rel=1e-4)
    summary = json.loads((tmp_path / "pull" / "summary.json").read_text())
    assert summary["method"] == "pull_together" and set(summary["knn_top1"]) == {"pretrained", "random_init"}

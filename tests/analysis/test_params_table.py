"""Per-module parameter / FLOP table: counts equal sums of numel, FLOPs of known layers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_run_overrides
from torch import nn

from pretrainlab.analysis.params import (
    TOTAL,
    analyze_config,
    count_parameters,
    encoder_num_params,
    flops_per_module,
    module_table,
)
from pretrainlab.cli import main
from pretrainlab.config import load_config
from pretrainlab.study.run import random_init_method

REPO = Path(__file__).resolve().parents[2]


def small_model() -> nn.Sequential:
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Sequential(nn.Linear(16, 4), nn.Linear(4, 2)))
    model[0].requires_grad_(False)
    return model


def test_parameter_counts_are_sums_of_numel_split_by_requires_grad() -> None:
    model = small_model()
    counts = count_parameters(model)
    assert counts.total == sum(p.numel() for p in model.parameters()) == 8 * 16 + 16 + 16 * 4 + 4 + 4 * 2 + 2
    assert counts.frozen == 8 * 16 + 16
    assert counts.trainable == counts.total - counts.frozen


def test_shared_parameters_are_counted_once() -> None:
    linear = nn.Linear(4, 4)
    assert count_parameters(nn.Sequential(linear, linear)).total == 20


def test_flops_of_a_linear_layer_are_two_in_out_per_image() -> None:
    model = small_model()
    images = torch.randn(3, 8)
    flops = flops_per_module(model, lambda: model(images), batch_size=3)
    assert flops["0"] == 2 * 8 * 16
    assert flops["2.1"] == 2 * 4 * 2
    assert flops["2"] == 2 * (16 * 4 + 4 * 2)
    assert flops[""] == 2 * (8 * 16 + 16 * 4 + 4 * 2)


def test_module_table_depth_and_rows() -> None:
    model = small_model()
    flops = flops_per_module(model, lambda: model(torch.randn(2, 8)), batch_size=2)
    rows = module_table(model, flops, max_depth=1)
    assert [(r.name, r.depth) for r in rows] == [(TOTAL, 0), ("0", 1), ("2", 1)]  # the ReLU has nothing to show
    assert rows[0].flops_per_image == flops[""]
    assert [r.name for r in module_table(model, flops, max_depth=2)] == [TOTAL, "0", "2", "2.0", "2.1"]


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({"a": nn.Linear(4, 3), "b": nn.Linear(4, 5)})  # never called as a whole

    def forward(self, features: torch.Tensor) -> list[torch.Tensor]:
        return [head(features) for head in self.heads.values()]


def test_container_modules_sum_the_flops_of_their_children() -> None:
    model = TwoHeads()
    images = torch.randn(2, 4)
    flops = flops_per_module(model, lambda: model(images), batch_size=2)
    rows = {row.name: row for row in module_table(model, flops, max_depth=2)}
    assert "heads" not in flops and rows["heads"].flops_per_image == 2 * 4 * 3 + 2 * 4 * 5


def test_analyze_config_measures_the_evaluated_network_backbone_neck_heads(tmp_path: Path) -> None:
    overrides = tiny_run_overrides(tmp_path / "data", tmp_path / "runs")
    config = load_config(REPO / "configs" / "dino_small.yaml", [*overrides, "neck.name=dappm"])
    rows = {row.name: row for row in analyze_config(config, max_depth=4)}
    assert rows[TOTAL].params.trainable == rows["student"].params.trainable  # the EMA teacher is frozen
    frozen_in_student = rows["student"].params.total - rows["student"].params.trainable
    assert frozen_in_student == config.method.head.out_dim  # norm_last_layer: the (K, 1) magnitude is fixed
    assert rows["teacher"].params.trainable == 0
    assert rows["teacher"].flops_per_image == rows[TOTAL].flops_per_image > 0
    parts = [rows[f"teacher.{part}"].flops_per_image for part in ("backbone", "neck", "heads")]
    assert all(value > 0 for value in parts) and sum(parts) == pytest.approx(rows["teacher"].flops_per_image)
    assert rows["student.backbone"].flops_per_image is None  # not on the measured (teacher) path
    conv1 = rows["teacher.backbone.model.conv1"]
    assert conv1.flops_per_image == 2 * conv1.params.total * 32 * 32  # 3x3 stride-1 conv (no bias) at 32 px
    method = random_init_method(config)
    expected = rows["teacher.backbone"].params.total + rows["teacher.neck"].params.total
    assert encoder_num_params(method) == expected


def test_analyze_params_command_writes_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = REPO / "configs" / "quickstart.yaml"
    overrides = tiny_run_overrides(tmp_path / "data", tmp_path / "runs")
    assert main(["-q", "analyze", "params", str(config), "--depth", "1", *overrides]) == 0
    markdown = (tmp_path / "runs" / "quickstart" / "analysis" / "params.md").read_text()
    assert "| **(total)** |" in markdown and "`backbone`" in markdown
    csv_lines = (tmp_path / "runs" / "quickstart" / "analysis" / "params.csv").read_text().splitlines()
    assert csv_lines[0] == "module,depth,params,trainable,frozen,flops_per_image"
    assert "MFLOPs / image" in capsys.readouterr().out
    assert not (tmp_path / "data").exists()  # no data was read or generated

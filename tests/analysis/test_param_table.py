"""Parameter table (analysis/param_table.py): rows per top-level module with adapters apart, totals that
equal the model's counts, and the Markdown / text / rich renderings."""

from __future__ import annotations

import torch
from rich.console import Console
from torch import nn

from pretrainlab.analysis.param_table import (
    ParamRow,
    param_rows,
    param_table_markdown,
    param_table_rich,
    param_table_text,
)
from pretrainlab.engine.freeze import set_trainable
from pretrainlab.eval.segmentation_model import Segmentor
from pretrainlab.methods.dacs import DACS
from pretrainlab.models.adapters import AdaptersConfig, inject_adapters, trainable_patterns
from pretrainlab.models.backbones import TimmBackboneConfig, build_backbone
from pretrainlab.models.heads.seg_base import build_seg_head
from pretrainlab.models.heads.seg_linear import SegLinearHeadConfig


def toy() -> nn.Module:
    """backbone Linear(2, 3): 9 parameters, frozen; head Linear(3, 1): 4, trainable; a direct scale: 1."""
    model = nn.Module()
    model.backbone = nn.Linear(2, 3)
    model.head = nn.Linear(3, 1)
    model.scale = nn.Parameter(torch.ones(1))
    model.backbone.requires_grad_(False)
    return model


def adapted_vit(train: str = "adapters") -> tuple[Segmentor, list[str]]:
    """A 2-block ViT of width 32 with AdaptFormer (bottleneck 8) on its last block, and a linear head."""
    backbone = build_backbone(TimmBackboneConfig(arch="vit_tiny_patch16_224", img_size=32, patch_size=8,
                                                 embed_dim=32, depth=2, num_heads=2))  # fmt: skip
    model = Segmentor(backbone, build_seg_head(SegLinearHeadConfig(), backbone.out_channels, backbone.strides, 3))
    config = AdaptersConfig(train=train, kind="adaptformer", bottleneck=8)
    names = inject_adapters(model, config)
    set_trainable(model, trainable_patterns(config, names))
    return model, names


def check_totals(model: nn.Module, rows: list[ParamRow]) -> None:
    total = rows[-1]
    assert total.module == "total"
    assert total.parameters == sum(p.numel() for p in model.parameters())
    assert total.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert total.frozen == sum(p.numel() for p in model.parameters() if not p.requires_grad)
    assert sum(row.parameters for row in rows[:-1]) == total.parameters
    assert sum(row.trainable for row in rows[:-1]) == total.trainable


def test_rows_of_a_hand_counted_model() -> None:
    rows = param_rows(toy())
    assert rows == [ParamRow("(own)", 1, 1), ParamRow("backbone", 9, 0), ParamRow("head", 4, 4), ParamRow("total", 14, 5)]
    assert [row.frozen for row in rows] == [0, 9, 0, 9]


def test_adapters_are_a_row_of_their_own() -> None:
    model, names = adapted_vit()
    rows = param_rows(model)
    assert [row.module for row in rows] == ["backbone", "backbone (adapters)", "head", "total"]
    backbone, adapters, head, _ = rows
    assert adapters.parameters == adapters.trainable == 2 * 32 * 8 + 8 + 32  # one block of width 32
    assert adapters.parameters == sum(model.get_parameter(name).numel() for name in names)
    assert backbone.trainable == 0 and backbone.frozen == backbone.parameters
    assert head.trainable == head.parameters == sum(p.numel() for p in model.head.parameters())
    check_totals(model, rows)


def test_totals_with_everything_training_and_in_a_dacs_method() -> None:
    model, _ = adapted_vit(train="all")
    check_totals(model, param_rows(model))
    method = DACS(model)
    rows = param_rows(method)
    assert [row.module for row in rows] == ["student", "student (adapters)", "teacher", "teacher (adapters)", "total"]
    assert rows[2].trainable == rows[3].trainable == 0
    assert rows[1].parameters == rows[3].parameters
    check_totals(method, rows)


def test_markdown() -> None:
    assert param_table_markdown(param_rows(toy()), title="toy") == (
        "# toy\n\n"
        "| module | parameters | trainable | frozen |\n"
        "|---|---:|---:|---:|\n"
        "| `(own)` | 1 | 1 | 0 |\n"
        "| `backbone` | 9 | 0 | 9 |\n"
        "| `head` | 4 | 4 | 0 |\n"
        "| **total** | **14** | **5** | **9** |\n"
    )
    assert param_table_markdown([ParamRow("total", 1_234_567, 1_000)]).splitlines()[-1] == (
        "| **total** | **1,234,567** | **1,000** | **1,233,567** |"
    )


def test_plain_text_is_aligned() -> None:
    text = param_table_text([ParamRow("backbone", 3_319_392, 0), ParamRow("head", 1_028, 1_028),
                             ParamRow("total", 3_320_420, 1_028)])  # fmt: skip
    assert text.splitlines() == [
        "module    parameters  trainable     frozen",
        "backbone   3,319,392          0  3,319,392",
        "head           1,028      1,028          0",
        "total      3,320,420      1,028  3,319,392",
    ]


def test_rich_table() -> None:
    rows = param_rows(toy())
    table = param_table_rich(rows, title="toy")
    assert table.row_count == len(rows)
    console = Console(width=80, record=True)
    console.print(table)
    rendered = console.export_text()
    assert "toy" in rendered and "backbone" in rendered and "14" in rendered

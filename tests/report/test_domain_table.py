"""The domains × steps table of online adaptation: CSV, summary (mean target mIoU, forgetting), heatmap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pretrainlab.report.domain_table import BEFORE, DomainRow, DomainTable


def table() -> DomainTable:
    domains = ["clear", "25mm", "50mm"]
    rows = [
        DomainRow(BEFORE, None, {"clear": 60.0, "25mm": 40.0, "50mm": 30.0}),
        DomainRow("1: 25mm", "25mm", {"clear": 58.0, "25mm": 50.0, "50mm": 35.0}),
        DomainRow("2: 50mm", "50mm", {"clear": 55.0, "25mm": 47.0, "50mm": 45.0}),
        DomainRow("3: clear", "clear", {"clear": 59.0, "25mm": 46.0, "50mm": 41.0}),
    ]
    return DomainTable(domains, rows)


def test_summary_is_the_online_mean_the_final_row_and_the_drop_from_the_best() -> None:
    summary = table().summary()
    assert summary["mean_target_miou"] == pytest.approx((50.0 + 45.0 + 59.0) / 3)
    assert summary["final_miou"] == {"clear": 59.0, "25mm": 46.0, "50mm": 41.0}
    assert summary["forgetting"] == pytest.approx({"clear": 1.0, "25mm": 4.0, "50mm": 4.0})


def test_csv_rows_are_steps_and_columns_domains() -> None:
    lines = table().csv().splitlines()
    assert lines[0] == "step,clear,25mm,50mm" and lines[2] == "1: 25mm,58.00,50.00,35.00" and len(lines) == 5
    partial = DomainTable(["clear", "25mm"], [DomainRow(BEFORE, None, {"clear": 1.0})])
    assert partial.csv().splitlines()[1] == "before,1.00," and np.isnan(partial.matrix()[0, 1])


def test_markdown_bolds_the_trained_on_domain_and_the_heatmap_is_written(tmp_path: Path) -> None:
    assert "| 2: 50mm | 55.00 | 47.00 | **45.00** |" in table().markdown()
    table().plot(tmp_path / "domains.png", "dacs")
    assert (tmp_path / "domains.png").stat().st_size > 1000

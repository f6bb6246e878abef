"""Score tables: reading run folders (nested, with or without summary.json), sorting, formatting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pretrainlab.cli import main
from pretrainlab.report.scores import (
    ScoreRow,
    build_score_table,
    collect_runs,
    format_value,
    read_run_scores,
)


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def summary(pretrained: float, random_init: float, **extra: object) -> dict:
    return {"knn_top1": {"pretrained": pretrained, "random_init": random_init}, "wall_time_s": 75.4, **extra}


def row(name: str, **values: float) -> ScoreRow:
    return ScoreRow(name, Path(name), dict(values))


def test_rows_sort_descending_by_the_metric_with_missing_values_last() -> None:
    rows = [row("a", knn_top1=30.0), row("b"), row("c", knn_top1=41.5), row("d", knn_top1=30.0)]
    table = build_score_table(rows, "knn_top1")
    assert [r.name for r in table.rows] == ["c", "a", "d", "b"]


def test_default_metric_is_miou_when_any_run_has_it() -> None:
    assert build_score_table([row("a", knn_top1=50.0), row("b", mIoU=10.0)]).metric == "mIoU"
    assert build_score_table([row("a", knn_top1=50.0)]).metric == "knn_top1"


def test_markdown_and_csv_cells() -> None:
    rows = [row("v1", knn_top1=34.251, knn_top1_random_init=19.4, num_params=1_234_567, wall_time_s=754.4)]
    table = build_score_table(rows, "knn_top1", required=("linear_top1",), first="variant", title="T")
    assert [c.key for c in table.columns] == [
        "knn_top1",
        "knn_top1_random_init",
        "linear_top1",
        "num_params",
        "wall_time_s",
    ]
    markdown = table.markdown().splitlines()
    assert markdown[0] == "# T"
    assert markdown[4] == "| variant | **kNN top-1** | kNN top-1 random init | linear top-1 | params | wall time |"
    assert markdown[6] == "| v1 | 34.25 | 19.40 |  | 1.23 M | 12 min 34 s |"
    assert table.csv().splitlines() == [
        "variant,knn_top1,knn_top1_random_init,linear_top1,num_params,wall_time_s",
        "v1,34.2510,19.4000,,1234567,754.4000",
    ]


@pytest.mark.parametrize(
    ("value", "kind", "text"),
    [
        (None, "score", ""),
        (7.0, "score", "7.00"),
        (59.6, "seconds", "1 min 00 s"),
        (42.0, "seconds", "42 s"),
        (316_896, "count", "0.32 M"),
        (10_000, "count", "0.01 M"),
        (2_507, "count", "2.5 k"),
    ],
)
def test_format_value(value: float | None, kind: str, text: str) -> None:
    assert format_value(value, kind) == text


def test_read_run_scores_from_summary_and_eval_files(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_json(run / "summary.json", summary(40.0, 20.0, num_params=1000, linear_top1={"pretrained": 55.0}))
    write_json(run / "eval" / "seg.json", {"summary": {"mIoU": 31.5, "mAcc": 40.1, "aAcc": 80.2}, "per_class": {}})
    write_json(run / "eval" / "seg_random_init.json", {"summary": {"mIoU": 12.0, "mAcc": 20.0, "aAcc": 60.0}})
    assert read_run_scores(run).values == {
        "knn_top1": 40.0,
        "knn_top1_random_init": 20.0,
        "linear_top1": 55.0,
        "mIoU": 31.5,
        "mIoU_random_init": 12.0,
        "mAcc": 40.1,
        "aAcc": 80.2,
        "num_params": 1000.0,
        "wall_time_s": 75.4,
    }


def test_an_unfinished_run_reports_what_its_phases_and_eval_folder_hold(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_json(run / "eval" / "epoch_5" / "knn" / "result.json",
               {"phase": "01_knn", "kind": "knn", "dir": "eval/epoch_5/knn", "knn_top1": {"pretrained": 30.5, "random_init": 18.5}})  # fmt: skip
    write_json(run / "eval" / "linear.json", {"pretrained": {"top1": 44.0}, "random_init": {"top1": 21.0}})
    assert read_run_scores(run).values == {
        "knn_top1": 30.5,
        "knn_top1_random_init": 18.5,
        "linear_top1": 44.0,
        "linear_top1_random_init": 21.0,
    }


def test_collect_runs_finds_nested_runs_and_skips_other_folders(tmp_path: Path) -> None:
    write_json(tmp_path / "quickstart" / "summary.json", summary(34.0, 19.0))
    write_json(tmp_path / "w1" / "dappm" / "summary.json", summary(38.0, 19.0))
    write_json(tmp_path / "w1" / "no_neck" / "summary.json", summary(36.0, 19.0))
    write_json(tmp_path / "seg" / "frozen" / "eval" / "seg.json", {"mIoU": 25.0})
    write_json(tmp_path / "w1" / "dappm" / "pretrain" / "eval" / "x.json", {"top1": 1.0})  # not a run
    (tmp_path / "empty" / "eval").mkdir(parents=True)
    names = sorted(r.name for r in collect_runs([tmp_path]))
    assert names == ["quickstart", "seg/frozen", "w1/dappm", "w1/no_neck"]
    assert [r.name for r in collect_runs([tmp_path / "w1" / "dappm"])] == ["dappm"]  # a run folder itself
    two_roots = sorted(r.name for r in collect_runs([tmp_path / "w1", tmp_path / "seg"]))
    assert two_roots == ["seg/frozen", "w1/dappm", "w1/no_neck"]


def test_report_command_sorts_by_miou_and_writes_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_json(tmp_path / "a" / "eval" / "seg.json", {"summary": {"mIoU": 20.0, "mAcc": 30.0, "aAcc": 70.0}})
    write_json(tmp_path / "b" / "eval" / "seg.json", {"summary": {"mIoU": 35.0, "mAcc": 45.0, "aAcc": 75.0}})
    write_json(tmp_path / "c" / "summary.json", summary(50.0, 20.0))
    assert main(["-q", "report", str(tmp_path)]) == 0
    lines = (tmp_path / "scores.csv").read_text().splitlines()
    assert lines[0] == "run,knn_top1,knn_top1_random_init,mIoU,mAcc,aAcc,wall_time_s"
    assert [line.split(",")[0] for line in lines[1:]] == ["b", "a", "c"]
    assert "Sorted by mIoU" in (tmp_path / "scores.md").read_text()
    assert "kNN top-1" in capsys.readouterr().out
    out = tmp_path / "out"
    assert main(["-q", "report", str(tmp_path), "--metric", "knn_top1", "--out", str(out)]) == 0
    assert (out / "scores.csv").read_text().splitlines()[1].startswith("c,")
    assert main(["-q", "report", str(tmp_path), "--metric", "top1"]) == 2
    assert "unknown metric 'top1'" in capsys.readouterr().err


def test_an_online_run_gives_mean_target_final_and_forgetting_and_links_its_heatmap(tmp_path: Path) -> None:
    run = tmp_path / "dacs"
    write_json(run / "adapt" / "00_source" / "result.json", {"phase": "00_source", "kind": "source",
               "mean_target_miou": None, "final_miou": {"clear": 50.0, "25mm": 40.0}, "forgetting": {"clear": 0.0, "25mm": 0.0}})  # fmt: skip
    write_json(run / "adapt" / "01_step1_25mm" / "result.json", {"phase": "01_step1_25mm", "kind": "adapt",
               "mean_target_miou": 45.5, "final_miou": {"clear": 48.0, "25mm": 45.5}, "forgetting": {"clear": 2.0, "25mm": 0.0}})  # fmt: skip
    (run / "plots").mkdir()
    (run / "plots" / "domains.png").write_bytes(b"png")
    scores = read_run_scores(run)
    assert scores.values == {"mean_target_miou": 45.5, "mean_final_miou": 46.75, "mean_forgetting": 1.0}
    other = row("other", mean_forgetting=0.5)
    assert [r.name for r in build_score_table([scores, other], "mean_forgetting").rows] == ["other", "dacs"]
    markdown = build_score_table([scores], "mean_target_miou").markdown(tmp_path)
    assert "Sorted by mean target mIoU (descending)." in markdown and "![dacs](dacs/plots/domains.png)" in markdown

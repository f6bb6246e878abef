"""Score tables of runs that evaluate segmentation during pretraining (W4): the final pretrained mIoU,
the epoch-0 random init, every run's mIoU by epoch in scores.md / scores.csv and one plot of the curves."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO_ROOT, write_w4_loop

from pretrainlab.config.sweeps import expand_sweep
from pretrainlab.report.scores import build_score_table, collect_runs, read_run_scores
from pretrainlab.run_dir import write_json
from pretrainlab.sweep import sweep_score_table


def test_final_miou_is_the_last_pretrained_one_and_random_init_the_epoch_0_one(tmp_path: Path) -> None:
    write_w4_loop(tmp_path / "run", {5: 15.4, 10: 16.1}, random_init=14.9)
    row = read_run_scores(tmp_path / "run")
    assert row.values == {"mIoU": 16.1, "mAcc": 26.1, "aAcc": 66.1, "mIoU_random_init": 14.9}
    assert row.seg_curve == [(0, 14.9), (5, 15.4), (10, 16.1)]


def test_an_unfinished_loop_has_no_final_miou_yet(tmp_path: Path) -> None:
    write_w4_loop(tmp_path / "run", {}, random_init=14.9)  # only epoch 0 evaluated: its seg.json is the random init
    assert read_run_scores(tmp_path / "run").values == {"mIoU_random_init": 14.9}


def test_seg_files_without_a_backbone_field_are_named_by_file(tmp_path: Path) -> None:
    write_json(tmp_path / "run" / "eval" / "seg.json", {"summary": {"mIoU": 31.5, "mAcc": 40.0, "aAcc": 80.0}})
    write_json(tmp_path / "run" / "eval" / "seg_random_init.json", {"summary": {"mIoU": 12.0}})
    write_json(tmp_path / "by_hand" / "eval" / "seg.json", {"backbone": "random_init", "summary": {"mIoU": 11.0}})
    expected = {"mIoU": 31.5, "mAcc": 40.0, "aAcc": 80.0, "mIoU_random_init": 12.0}
    assert read_run_scores(tmp_path / "run").values == expected
    assert read_run_scores(tmp_path / "by_hand").values == {"mIoU_random_init": 11.0}  # `evaluate seg` of random


def test_the_w4_sweep_lists_every_run_by_epoch_and_plots_the_curves(tmp_path: Path) -> None:
    sweep = expand_sweep(REPO_ROOT / "configs" / "w4_mae" / "methods.yaml", preset="small",
                         overrides=[f"output_root={tmp_path}"])  # fmt: skip
    runs = {name: config.run_dir for name, config in sweep.configs.items()}
    write_w4_loop(runs["patches"], {10: 15.4, 20: 16.0, 30: 16.3}, random_init=14.9)
    write_w4_loop(runs["segments"], {10: 16.2, 20: 17.5, 30: 18.1}, random_init=14.7)
    write_w4_loop(runs["four_channels"], {10: 15.9, 20: 16.8}, random_init=14.8)  # still running
    table = sweep_score_table(sweep)
    md_path, csv_path = table.write(sweep.study_dir)
    markdown = md_path.read_text()
    assert markdown.splitlines()[4:10] == [
        "| variant | **mIoU** | mAcc | mIoU random init | aAcc | params | wall time |",
        "|---|---:|---:|---:|---:|---:|---:|",
        "| segments | 18.10 | 28.10 | 14.70 | 68.10 |  |  |",
        "| four_channels | 16.80 | 26.80 | 14.80 | 66.80 |  |  |",
        "| patches | 16.30 | 26.30 | 14.90 | 66.30 |  |  |",
        "| preencoder |  |  |  |  |  |  |",
    ]
    curves = markdown.split("## mIoU during pretraining\n")[1].splitlines()
    assert curves[3:9] == [
        "| variant | 0 | 10 | 20 | 30 |",
        "|---|---:|---:|---:|---:|",
        "| segments | 14.70 | 16.20 | 17.50 | 18.10 |",
        "| four_channels | 14.80 | 15.90 | 16.80 |  |",
        "| patches | 14.90 | 15.40 | 16.00 | 16.30 |",
        "| preencoder |  |  |  |  |",
    ]
    assert "![mIoU vs epoch](plots/miou_vs_epoch.png)" in curves
    assert (sweep.study_dir / "plots" / "miou_vs_epoch.png").is_file()
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "variant,mIoU,mAcc,mIoU_random_init,aAcc,num_params,wall_time_s,mIoU@0,mIoU@10,mIoU@20,mIoU@30"
    assert lines[2] == "four_channels,16.8000,26.8000,14.8000,66.8000,,,14.8000,15.9000,16.8000,"


@pytest.mark.usefixtures("with_quickstart_export")  # the W5 sweep's base loads the quickstart's export
def test_the_w5_head_sweep_shows_no_random_init_column(tmp_path: Path) -> None:
    sweep = expand_sweep(REPO_ROOT / "configs" / "w5_seg" / "heads.yaml", overrides=[f"output_root={tmp_path}"])
    for index, (name, config) in enumerate(sweep.configs.items()):
        write_w4_loop(config.run_dir, {0: 20.0 + index})
    header = sweep_score_table(sweep).markdown().splitlines()[4]
    assert header == "| variant | **mIoU** | mAcc | aAcc | params | wall time |"


def test_scores_link_each_runs_last_reconstruction_figure(tmp_path: Path) -> None:
    study = tmp_path / "w4"
    write_w4_loop(study / "segments", {10: 16.2, 20: 17.5}, random_init=14.7, reconstruct=True)
    write_w4_loop(study / "patches", {10: 15.4}, random_init=14.9)  # no reconstruct phase: no figure
    build_score_table(collect_runs([study]), "mIoU").write(study)
    text = (study / "scores.md").read_text()
    assert "![segments](segments/eval/epoch_20/reconstruct/reconstructions.png)" in text
    assert "![patches]" not in text and text.count("## Reconstructions") == 1

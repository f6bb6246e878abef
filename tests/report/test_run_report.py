"""report.md and plots of a study: the segmentation-during-pretraining section (W4), the reconstruction
figure, and the kNN section only for runs that have kNN scores."""

from __future__ import annotations

from pathlib import Path

from conftest import write_w4_loop

from pretrainlab.report.run_report import write_run_report
from pretrainlab.run_dir import RunDir


def report_of(run: RunDir, **summary: object) -> str:
    write_run_report(run, {"method": "mae", "backbone": "vit", "epochs": 10, "phases": run.phase_results(), **summary})
    return run.report.read_text()


def test_w4_run_reports_the_miou_curve_and_the_last_reconstructions(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "segments")
    write_w4_loop(run.path, {5: 15.4, 10: 16.1}, random_init=14.9, reconstruct=True)
    lines = report_of(run).splitlines()
    start = lines.index("## Segmentation during pretraining")
    assert lines[start + 2 : start + 7] == ["| epoch | mIoU |", "|---:|---:|", "| 0 (random init) | 14.90 |",
                                            "| 5 | 15.40 |", "| 10 | 16.10 |"]  # fmt: skip
    assert "![mIoU vs epoch](plots/miou_vs_epoch.png)" in lines and (run.plots / "miou_vs_epoch.png").is_file()
    assert "![reconstructions](eval/epoch_10/reconstruct/reconstructions.png)" in lines
    assert "## Reconstructions after epoch 10" in lines
    assert not any(line.startswith("## kNN") for line in lines) and not (run.plots / "knn.png").exists()
    assert lines.index("## Segmentation during pretraining") < lines.index("## Semantic segmentation")


def test_random_init_scored_beside_the_pretrained_backbone_is_a_dashed_reference(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    for index, (epoch, pretrained) in enumerate(((5, 15.0), (10, 17.0))):
        run.phase(index, "seg", f"eval/epoch_{epoch}/seg").write_result(
            {"epoch": epoch, "seg_miou": {"pretrained": pretrained, "random_init": 12.0}, "seconds": 1.0})  # fmt: skip
    text = report_of(run)
    assert "| 5 | 15.00 |" in text and "(random init)" not in text.split("## Segmentation during pretraining")[1]
    assert "Random init, finetuned the same way: 12.00 mIoU (dashed)." in text


def test_one_seg_evaluation_draws_no_curve_and_knn_runs_keep_their_section(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.phase(1, "seg", "eval/epoch_10/seg").write_result({"epoch": 10, "seg_miou": {"pretrained": 15.0},
                                                           "seconds": 1.0})  # fmt: skip
    knn = {"pretrained": 40.0, "random_init": 20.0}
    text = report_of(run, knn_top1=knn, knn_per_k={"pretrained": {"20": {"top1": 40.0}}})
    assert "## Segmentation during pretraining" not in text and not (run.plots / "miou_vs_epoch.png").exists()
    assert "Gain over random init at the primary k: **+20.00** points." in text and (run.plots / "knn.png").is_file()


def test_phase_tables_and_analysis_sections_are_included_with_links_from_the_run_folder(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    knn_dir = run.path / "eval" / "epoch_3" / "knn"
    knn_dir.mkdir(parents=True)
    (knn_dir / "knn.md").write_text("## pretrained\n\n| k | T |\n|---|---|\n| 20 | 0.07 |\n\n![c](confusion_pretrained.png)\n")
    robustness_dir = run.path / "eval" / "epoch_3" / "robustness"
    robustness_dir.mkdir(parents=True)
    (robustness_dir / "robustness.md").write_text("# Robustness\n\n## pretrained\n\n![r](robustness.png) [x](https://a.b/c)\n")
    run.analysis_dir.mkdir(parents=True)
    (run.analysis_dir / "attention.md").write_text("## Attention\n\n![a](../plots/attention.png)\n")
    (run.analysis_dir / "landscape.md").write_text("# Loss landscapes\n\n## pretrained_2d\n\n![l](../plots/l.png)\n")
    lines = report_of(run, knn_top1={"pretrained": 60.0, "random_init": 20.0}, knn_table="eval/epoch_3/knn/knn.md",
                      robustness_table="eval/epoch_3/robustness/robustness.md",
                      mean_corruption_acc={"pretrained": 41.5, "random_init": 20.25}).splitlines()  # fmt: skip
    assert "Gain over random init at the primary k: **+40.00** points." in lines
    assert "### pretrained" in lines and "| 20 | 0.07 |" in lines
    assert "![c](eval/epoch_3/knn/confusion_pretrained.png)" in lines  # relative to the run folder now
    assert "- mean corruption accuracy: pretrained **41.50**, random_init **20.25**" in lines
    assert "### Robustness" in lines and "#### pretrained" in lines
    assert "![r](eval/epoch_3/robustness/robustness.png) [x](https://a.b/c)" in lines  # absolute links untouched
    start = lines.index("## Analyses (`pretrainlab analyze`)")
    assert lines.index("### Attention") > start and lines.index("### Loss landscapes") > lines.index("### Attention")
    assert "![a](plots/attention.png)" in lines and "![l](plots/l.png)" in lines and "#### pretrained_2d" in lines

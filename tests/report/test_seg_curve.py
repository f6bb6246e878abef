"""The mIoU curve of a run's seg phases: W4's loop (random init at epoch 0, pretrained after), and a
study that scores both backbones at one epoch (the random init becomes a reference level)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from pretrainlab.report.seg_curve import plot_miou_vs_epoch, seg_curve, seg_random_init_reference


def seg(epoch: int, **scores: float | None) -> dict:
    return {"kind": "seg", "epoch": epoch, "seg_miou": scores}


def test_the_w4_loop_curve_starts_at_the_random_init() -> None:
    phases = [seg(0, random_init=14.9), {"kind": "pretrain", "epoch": 5}, seg(5, pretrained=15.4),
              {"kind": "knn", "epoch": 5, "knn_top1": {"pretrained": 30.0}}, seg(10, pretrained=16.1)]  # fmt: skip
    assert seg_curve(phases) == [(0, 14.9), (5, 15.4), (10, 16.1)]
    assert seg_random_init_reference(phases) is None  # epoch 0 is on the curve already


def test_both_backbones_at_one_epoch_give_a_reference_level() -> None:
    phases = [seg(5, pretrained=15.0, random_init=12.0), seg(10, pretrained=17.0, random_init=12.5)]
    assert seg_curve(phases) == [(5, 15.0), (10, 17.0)]
    assert seg_random_init_reference(phases) == 12.5  # the last phase that scored it


def test_a_later_phase_at_the_same_epoch_wins_and_missing_scores_are_skipped() -> None:
    phases = [seg(5, pretrained=15.0), seg(5, pretrained=15.5), seg(10, pretrained=None), {"kind": "seg", "epoch": 15}]
    assert seg_curve(phases) == [(5, 15.5)]
    assert seg_curve([]) == [] and seg_random_init_reference([]) is None


def test_plot_writes_a_png(tmp_path: Path) -> None:
    path = tmp_path / "plots" / "miou_vs_epoch.png"
    plot_miou_vs_epoch({"patches": [(0, 14.9), (10, 15.4)], "segments": [(0, 14.0), (10, 16.0)]}, path,
                       {"random init": 14.0})  # fmt: skip
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > image.height

"""summary.json of a W4 loop: each backbone's seg score from the last phase that scored it (the random
init only at epoch 0), the mIoU curve and the last reconstruction figure."""

from __future__ import annotations

from pathlib import Path

from conftest import write_w4_loop

from pretrainlab.config import load_config
from pretrainlab.methods.base import build_method
from pretrainlab.run_dir import RunDir
from pretrainlab.study.phase import StudyContext
from pretrainlab.study.runner import study_summary

TINY_MAE = {"backbone.arch": "vit_tiny_patch16_224", "backbone.img_size": 32, "backbone.patch_size": 8,
            "backbone.embed_dim": 32, "backbone.depth": 1, "backbone.num_heads": 2, "method.name": "mae",
            "method.decoder.embed_dim": 16, "method.decoder.depth": 1, "method.decoder.num_heads": 2,
            "engine.max_epochs": 10, "eval.random_init_baseline": False,
            "study.phases": [{"name": "pretrain"}]}  # fmt: skip


def test_summary_of_the_w4_loop(tmp_path: Path) -> None:
    config = load_config(None, [f"{key}={value}" for key, value in {**TINY_MAE, "output_root": tmp_path}.items()])
    run = RunDir(config.run_dir)
    write_w4_loop(run.path, {5: 15.4, 10: 16.1}, random_init=14.9, reconstruct=True)
    context = StudyContext(config, run, _methods={"pretrained": build_method(config)}, _epoch=10)
    summary = study_summary(config, run, context, wall_time_s=60.0)
    assert summary["seg_miou"] == {"pretrained": 16.1, "random_init": 14.9}
    assert summary["seg_curve"] == [(0, 14.9), (5, 15.4), (10, 16.1)]
    assert summary["reconstructions"] == "eval/epoch_10/reconstruct/reconstructions.png"
    assert summary["epoch"] == 10 and summary["seg_s"] == 3.0 and summary["pretrain_s"] == 2.0
    assert [phase["phase"] for phase in summary["phases"]] == [
        "00_seg", "01_pretrain", "02_seg", "03_reconstruct", "04_pretrain", "05_seg", "06_reconstruct"]  # fmt: skip

"""A tiny MAE study with a `reconstruct` phase after each pretraining phase: the figures of the weights
of each epoch, and the report embedding the last one."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import TINY_SYNTHETIC, _yaml_inline

from pretrainlab.config import load_config
from pretrainlab.study.runner import run_study


@pytest.mark.slow
def test_reconstruct_phases_follow_the_pretraining(tiny_synthetic: Path, tmp_path: Path) -> None:
    values = {
        "name": "mae_tiny", "data.root": str(tiny_synthetic), "data.synthetic": TINY_SYNTHETIC, "data.batch_size": 2,
        "data.num_workers": 0, "output_root": str(tmp_path), "engine.precision": "32", "engine.progress_bar": False,
        "engine.max_epochs": 2, "optim.warmup_epochs": 0, "eval.knn.every_n_epochs": 0,
        "backbone.arch": "vit_tiny_patch16_224", "backbone.img_size": 64, "backbone.patch_size": 8,
        "backbone.embed_dim": 32, "backbone.depth": 1, "backbone.num_heads": 2, "method.name": "mae",
        "method.mask_method": "segments", "method.images": "segmentation/images/training",
        "method.masks.root": "segmentation/sam_masks/training", "method.decoder.preset": "tiny",
        "study.every_epochs": 1, "study.evaluate": [{"name": "reconstruct", "num_images": 2}],
    }  # fmt: skip
    config = load_config(None, [f"{key}={_yaml_inline(value)}" for key, value in values.items()])
    summary = run_study(config)
    run = config.run_dir
    assert [(p["phase"], p["epoch"]) for p in summary["phases"]] == [
        ("00_pretrain", 1), ("01_reconstruct", 1), ("02_pretrain", 2), ("03_reconstruct", 2)]  # fmt: skip
    assert (run / "eval" / "epoch_1" / "reconstruct" / "reconstructions.png").is_file()
    assert summary["reconstructions"] == "eval/epoch_2/reconstruct/reconstructions.png"
    assert "![reconstructions](eval/epoch_2/reconstruct/reconstructions.png)" in (run / "report.md").read_text()

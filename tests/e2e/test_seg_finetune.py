"""End to end: frozen vs full finetuning of the same backbone on the synthetic scenes (tiny iterations)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pretrainlab.config.loading import load_config
from pretrainlab.data.synthetic import write_synthetic_dataset
from pretrainlab.eval.segmentation import evaluate_segmentor, finetune_segmentation
from pretrainlab.eval.segmentation_data import build_seg_datasets
from pretrainlab.models.backbones import build_backbone

SEG_DATA = {"num_train": 16, "num_val": 16, "num_seg_train": 64, "num_seg_val": 16}


@pytest.mark.slow
def test_full_finetuning_is_not_worse_than_frozen(tmp_path: Path) -> None:
    write_synthetic_dataset(tmp_path / "data", workers=1, **SEG_DATA)
    overrides = [
        f"data.root={tmp_path / 'data'}",
        "data.synthetic=null",
        "engine.precision=32",
        "eval.seg.crop_size=64",
        "eval.seg.scale=[256,64]",
        "eval.seg.batch_size=8",
        "eval.seg.iterations=60",
        "eval.seg.lr=0.003",
        "eval.seg.lr_multipliers={head: 10.0}",
        "eval.seg.weight_decay=1e-4",
    ]
    scores = {}
    for mode in ("frozen", "full"):
        config = load_config("configs/quickstart.yaml", [*overrides, f"eval.seg.mode={mode}"])
        train, val = build_seg_datasets(config)
        segmentor, log = finetune_segmentation(build_backbone(config.backbone), config, train, tmp_path / mode, mode)
        assert log.losses[-1][1] < log.losses[0][1]
        metric, _ = evaluate_segmentor(segmentor, val, config)
        scores[mode] = metric.summary()["mIoU"]
    assert scores["full"] >= scores["frozen"], scores

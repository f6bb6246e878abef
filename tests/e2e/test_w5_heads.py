"""End to end: the W5 head benchmark (`configs/w5_seg/base.yaml`: one frozen backbone from `backbone.checkpoint`,
one head per study) trains K-Net and Mask2Former in a short run beside the linear head.

On a random frozen backbone and 200 iterations, K-Net beats the linear head clearly (13.6 vs 5.9 mIoU when
written); Mask2Former's set-prediction loss falls but its mIoU is still at the linear head's level (6.5):
it needs the benchmark's budget, where it beats it (README, W5: 48.84 vs 28.93)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pretrainlab.cli import main
from pretrainlab.config.loading import load_config
from pretrainlab.data.synthetic import write_synthetic_dataset
from pretrainlab.models.backbones import build_backbone

W5_BASE = "configs/w5_seg/base.yaml"
HEADS = {
    "seg_linear": {"eval.seg.lr": 0.03},
    "knet": {"eval.seg.head": {"name": "knet", "channels": 32, "num_heads": 2, "ffn_dim": 64, "updator_dim": 32},
             "eval.seg.lr": 1e-3},
    "mask2former": {"eval.seg.head": {"name": "mask2former", "num_queries": 12, "hidden_dim": 32, "num_layers": 3,
                                      "num_heads": 2, "ffn_dim": 64, "num_encoder_layers": 1, "num_points": None},
                    "eval.seg.lr": 1e-3},
}  # fmt: skip


def run_head(tmp_path: Path, checkpoint: Path, name: str) -> dict:
    values = {
        "name": name, "data.root": str(tmp_path / "data"), "data.synthetic": None, "output_root": str(tmp_path / "runs"),
        "backbone.channels": [8, 8, 16, 16], "backbone.stem_width": 8, "backbone.checkpoint": str(checkpoint),
        "engine.progress_bar": False, "eval.seg.iterations": 200, "eval.seg.batch_size": 8, "eval.seg.num_examples": 0,
        **HEADS[name],
    }  # fmt: skip
    assert main(["-q", "study", W5_BASE, *(f"{key}={json.dumps(value)}" for key, value in values.items())]) == 0
    return json.loads((tmp_path / "runs" / name / "eval" / "epoch_0" / "seg" / "seg.json").read_text())


@pytest.mark.slow
def test_knet_beats_the_linear_head_and_mask2former_learns_in_a_short_w5_run(tmp_path: Path) -> None:
    write_synthetic_dataset(tmp_path / "data", workers=1, num_train=16, num_val=8, num_seg_train=96, num_seg_val=24)
    checkpoint = tmp_path / "backbone.pt"
    checkpoint.touch()  # the config checks that it exists; the random-init backbone is written below
    config = load_config(W5_BASE, [f"backbone.checkpoint={checkpoint}", "backbone.channels=[8, 8, 16, 16]",
                                   "backbone.stem_width=8"])  # fmt: skip
    torch.save(build_backbone(config.backbone.model_copy(update={"checkpoint": None})).state_dict(), checkpoint)

    results = {name: run_head(tmp_path, checkpoint, name) for name in HEADS}
    miou = {name: result["summary"]["mIoU"] for name, result in results.items()}
    assert miou["knet"] > miou["seg_linear"] + 4.0, miou
    losses = [loss for _, loss in results["mask2former"]["train"]["losses"]]
    assert losses[-1] < 0.8 * losses[0], losses  # class + mask + dice of 4 supervised predictions
    assert miou["mask2former"] > 0.5 * miou["seg_linear"], miou
    head_params = {name: result["train"]["head_params"] for name, result in results.items()}
    assert head_params["seg_linear"] < head_params["mask2former"] < head_params["knet"], head_params

"""A 16-bit single-channel ImageFolder pretrains and is kNN-evaluated with the learned channel policy:
the data path gives one channel, a learned 1x1 conv feeds the backbone's three, and it trains."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from conftest import TINY_SYNTHETIC, tiny_run_overrides

from pretrainlab.cli import main
from pretrainlab.data.synthetic import GRAY16_BAND
from pretrainlab.run_dir import load_checkpoint


def test_gray16_pretrain_and_knn_with_the_learned_channel_policy(tmp_path: Path) -> None:
    synthetic = {**TINY_SYNTHETIC, "classification_format": "gray16"}
    overrides = tiny_run_overrides(tmp_path / "thermal", tmp_path / "runs", **{
        "name": "learned", "method": {"name": "simclr"}, "data.synthetic": synthetic, "data.channels": 1,
        "data.channel_policy": "learned", "data.uint16_scaling": "window", "data.intensity_window": list(GRAY16_BAND),
    })  # fmt: skip
    assert main(["-q", "study", "configs/quickstart.yaml", *overrides]) == 0

    run_dir = tmp_path / "runs" / "learned"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["knn_top1"]) == {"pretrained", "random_init"}
    assert all(0.0 <= value <= 100.0 for value in summary["knn_top1"].values())
    state = load_checkpoint(run_dir / "pretrain" / "checkpoints" / "last.ckpt")["state_dict"]
    adapter = next(v for k, v in state.items() if k.endswith("backbone.channel_adapter.weight"))
    first_conv = next(v for k, v in state.items() if k.endswith("backbone.network.model.conv1.weight"))
    assert adapter.shape == (3, 1, 1, 1) and first_conv.shape[1] == 3  # 1 data channel -> 3 network channels
    assert not torch.allclose(adapter, torch.ones(3, 1, 1, 1))  # trained away from the copy it started as

"""A 16-bit single-channel ImageFolder (thermal-like) pretrains and evaluates end to end."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import TINY_SYNTHETIC, tiny_run_overrides

from pretrainlab.cli import main
from pretrainlab.data.synthetic import GRAY16_BAND
from pretrainlab.run_dir import load_checkpoint


METHODS = {
    "simclr": {"name": "simclr"},
    "dino": {"name": "dino", "head": {"out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16}, "crops": {"num_local": 2}},
}


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_gray16_imagefolder_study(tmp_path: Path, method: str) -> None:
    data = tmp_path / "thermal"
    synthetic = {**TINY_SYNTHETIC, "classification_format": "gray16"}
    overrides = tiny_run_overrides(data, tmp_path / "runs", **{
        "name": method, "method": METHODS[method], "data.synthetic": synthetic, "data.channels": 1,
        "data.uint16_scaling": "window", "data.intensity_window": list(GRAY16_BAND),
        "study.phases": [{"name": "pretrain"}, {"name": "knn"}, {"name": "linear"}],
    })  # fmt: skip
    assert main(["-q", "study", "configs/quickstart.yaml", *overrides]) == 0

    image = cv2.imread(str(next((data / "classification" / "train").rglob("*.png"))), cv2.IMREAD_UNCHANGED)
    assert image.dtype == np.uint16 and image.ndim == 2  # the data really is 16-bit, one channel
    run_dir = tmp_path / "runs" / method
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["knn_top1"]) == set(summary["linear_top1"]) == {"pretrained", "random_init"}
    assert all(0.0 <= value <= 100.0 for value in summary["knn_top1"].values())
    state = load_checkpoint(run_dir / "pretrain" / "checkpoints" / "last.ckpt")["state_dict"]
    first_conv = next(v for k, v in state.items() if k.endswith("conv1.weight"))
    assert first_conv.shape[1] == 1  # the backbone takes the one channel; no silent 1 -> 3 copy

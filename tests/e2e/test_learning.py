"""Pretraining must beat a random initialisation on the synthetic data by a margin (kNN top-1, seg mIoU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pretrainlab.cli import main
from pretrainlab.data.synthetic import write_synthetic_dataset

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def small_synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic_small")
    write_synthetic_dataset(root, num_train=20000, num_val=1000, num_seg_train=1000, num_seg_val=200, workers=2)
    return root


@pytest.mark.slow
def test_simclr_beats_random_init(small_synthetic: Path, tmp_path: Path) -> None:
    overrides = [
        f"data.root={small_synthetic}",
        "data.synthetic.num_train=20000",
        "data.synthetic.num_val=1000",
        "data.synthetic.num_seg_train=1000",
        "data.synthetic.num_seg_val=200",
        f"output_root={tmp_path}",
        "engine.max_epochs=3",
        "engine.progress_bar=false",
        "eval.knn.ks=[20]",
        "eval.knn.every_n_epochs=0",
    ]
    assert main(["-q", "study", str(REPO_ROOT / "configs" / "quickstart.yaml"), *overrides]) == 0
    summary = json.loads((tmp_path / "quickstart" / "summary.json").read_text())
    knn, seg = summary["knn_top1"], summary["seg_miou"]
    # measured: 47.8 vs 24.6 after 3 epochs; 49.6 vs 24.3 at epoch 3 of the 14-epoch quickstart
    assert knn["pretrained"] >= knn["random_init"] + 12.0, knn
    # the quickstart's seg stage (frozen backbone, linear head, 64-px scenes); measured: 13.43 vs 8.75
    # after 3 epochs, 29.52 vs 8.75 after the quickstart's 14
    assert seg["pretrained"] >= seg["random_init"] + 3.0, seg

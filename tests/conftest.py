"""Shared test fixtures: the reference-number folder and small deterministic settings."""

from __future__ import annotations

import os
from collections.abc import Iterator
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def reference_dir() -> Path:
    """The folder of reference numbers: $PRETRAINLAB_REFERENCE_DIR or ../shared/reference."""
    return Path(os.environ.get("PRETRAINLAB_REFERENCE_DIR", REPO_ROOT.parent / "shared" / "reference"))


def load_reference(name: str) -> np.lib.npyio.NpzFile:
    """Open `<reference_dir>/<name>.npz`; fail (not skip) when it is missing."""
    path = reference_dir() / f"{name}.npz"
    if not path.exists():
        pytest.fail(f"reference file {path} not found (set PRETRAINLAB_REFERENCE_DIR)")
    return np.load(path)


@pytest.fixture(autouse=True)
def _few_threads_and_seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)


# `python -c KILLER.format(kill_at=N) <overrides>`: pretrain, dying like SIGKILL when the global step reaches N
KILLER = textwrap.dedent(
    """
    import os, sys
    from pretrainlab.config import load_config
    from pretrainlab.engine import module
    from pretrainlab.study.run import pretrain

    original = module.EngineModule.training_step

    def training_step(self, batch, batch_idx):
        if self.global_step == {kill_at}:
            os._exit(9)  # like SIGKILL: no cleanup, no final checkpoint
        return original(self, batch, batch_idx)

    module.EngineModule.training_step = training_step
    pretrain(load_config(None, sys.argv[1:]))
    """
)

TINY_SYNTHETIC = {"num_train": 96, "num_val": 48, "num_seg_train": 4, "num_seg_val": 2, "image_size": 32}


QUICKSTART_EXPORT = Path("runs/quickstart/backbone.pt")  # configs/w5_seg/base.yaml's backbone.checkpoint


@pytest.fixture(scope="module")
def with_quickstart_export(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The working directory moved to a fresh folder holding a stand-in for the quickstart's exported backbone
    (README: W5), so that every shipped config loads; yields the stand-in's path."""
    folder = tmp_path_factory.mktemp("cwd")
    (folder / QUICKSTART_EXPORT).parent.mkdir(parents=True)
    (folder / QUICKSTART_EXPORT).touch()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        yield folder / QUICKSTART_EXPORT


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic dataset in the real layouts, generated once per test session."""
    from pretrainlab.data.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("synthetic")
    write_synthetic_dataset(root, workers=1, **TINY_SYNTHETIC)
    return root


def tiny_run_overrides(data_root: Path, output_root: Path, **extra: object) -> list[str]:
    """Overrides turning any config into a seconds-long CPU run on `tiny_synthetic`."""
    overrides = {
        "data.root": str(data_root),
        "data.synthetic": {k: v for k, v in TINY_SYNTHETIC.items()},
        "data.batch_size": 16,
        "data.eval_batch_size": 64,
        "output_root": str(output_root),
        "engine.precision": "32",
        "engine.progress_bar": False,
        "engine.max_epochs": 2,
        "optim.warmup_epochs": 0,
        "backbone.arch": "resnet18",
        "backbone.small_input_stem": True,
        "backbone.layers": [1, 1, 1, 1],
        "backbone.channels": [8, 8, 16, 16],
        "eval.knn.ks": [5, 10],
        "study.phases": [{"name": "pretrain"}, {"name": "knn"}],  # seg phases have their own tests
    }
    overrides.update(extra)
    return [f"{key}={_yaml_inline(value)}" for key, value in overrides.items()]


def tiny_mae_overrides(data_root: Path, output_root: Path, **extra: object) -> list[str]:
    """Overrides turning any config into a seconds-long MAE run (ViT with 1 block of width 32, 8-px
    patches on the 64-px scenes of `tiny_synthetic`, their SAM masks)."""
    overrides = {
        "data.root": str(data_root), "data.synthetic": TINY_SYNTHETIC, "data.batch_size": 2, "data.num_workers": 0,
        "output_root": str(output_root), "engine.precision": "32", "engine.progress_bar": False,
        "engine.max_epochs": 2, "optim.warmup_epochs": 0, "eval.knn.every_n_epochs": 0,
        "backbone.arch": "vit_tiny_patch16_224", "backbone.img_size": 64, "backbone.patch_size": 8,
        "backbone.embed_dim": 32, "backbone.depth": 1, "backbone.num_heads": 2, "method.name": "mae",
        "method.images": "segmentation/images/training", "method.masks.root": "segmentation/sam_masks/training",
        "method.decoder.preset": "tiny", **extra,
    }  # fmt: skip
    return [f"{key}={_yaml_inline(value)}" for key, value in overrides.items()]


def _yaml_inline(value: object) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def write_w4_loop(run_dir: Path, miou: dict[int, float], random_init: float | None = None,
                  reconstruct: bool = False) -> None:
    """Hand-written phase results (result.json, seg.json) of a W4 loop: the random init's seg score at
    epoch 0, then per epoch of `miou` pretraining to it, the pretrained seg score and, with
    `reconstruct`, a reconstruction figure's result. mAcc = mIoU + 10, aAcc = mIoU + 50."""
    from pretrainlab.run_dir import RunDir, write_json

    run = RunDir(run_dir)
    steps = [("seg", 0, "random_init", random_init)] if random_init is not None else []
    for epoch, value in sorted(miou.items()):
        steps += [("pretrain", epoch, None, None), ("seg", epoch, "pretrained", value)]
        steps += [("reconstruct", epoch, None, None)] if reconstruct else []
    for index, (kind, epoch, backbone, value) in enumerate(steps):
        folder = f"pretrain/{index:02d}_to_epoch_{epoch}" if kind == "pretrain" else f"eval/epoch_{epoch}/{kind}"
        result: dict[str, object] = {"epoch": epoch, "seconds": 1.0}
        if kind == "seg":
            result["seg_miou"] = {backbone: value}
            write_json(run.path / folder / "seg.json",
                       {"backbone": backbone, "summary": {"mIoU": value, "mAcc": value + 10, "aAcc": value + 50},
                        "per_class": {}})  # fmt: skip
        elif kind == "reconstruct":
            result["reconstructions"] = f"{folder}/reconstructions.png"
        run.phase(index, kind, folder).write_result(result)

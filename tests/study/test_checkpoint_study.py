"""A study that does not pretrain evaluates the weights in `backbone.checkpoint` (W5's head benchmark)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from conftest import TINY_SYNTHETIC

from pretrainlab.cli import main
from pretrainlab.config.loading import load_config
from pretrainlab.models.backbones import build_backbone
from pretrainlab.models.heads.seg_base import build_seg_head
from pretrainlab.report.scores import read_run_scores
from pretrainlab.run_dir import RunDir
from pretrainlab.study.phase import StudyContext

W5_BASE = "configs/w5_seg/base.yaml"


def overrides(data_root: Path, output_root: Path, checkpoint: Path, **extra: object) -> list[str]:
    values = {
        "name": "heads", "data.root": str(data_root), "data.synthetic": dict(TINY_SYNTHETIC),
        "output_root": str(output_root), "engine.precision": "32", "engine.progress_bar": False,
        "backbone.channels": [8, 8, 16, 16], "backbone.stem_width": 8, "backbone.checkpoint": str(checkpoint),
        "eval.seg.crop_size": 32, "eval.seg.scale": [128, 32], "eval.seg.batch_size": 2,
        "eval.seg.eval_batch_size": 2, "eval.seg.iterations": 3, "eval.seg.num_examples": 1, **extra,
    }  # fmt: skip
    return [f"{key}={json.dumps(value) if not isinstance(value, str) else value}" for key, value in values.items()]


def saved_backbone(data_root: Path, tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A backbone checkpoint whose weights differ from any seeded initialisation."""
    checkpoint = tmp_path / "backbone.pt"
    checkpoint.touch()  # the config checks that the file exists
    config = load_config(W5_BASE, overrides(data_root, tmp_path, checkpoint))
    backbone = build_backbone(config.backbone.model_copy(update={"checkpoint": None}))
    with torch.no_grad():
        for parameter in backbone.parameters():
            parameter.add_(0.5)
    state = backbone.state_dict()
    torch.save(state, checkpoint)
    return checkpoint, state


def test_pretrained_is_the_checkpoint_and_random_init_is_random(tiny_synthetic: Path, tmp_path: Path) -> None:
    checkpoint, state = saved_backbone(tiny_synthetic, tmp_path)
    config = load_config(W5_BASE, overrides(tiny_synthetic, tmp_path, checkpoint))
    context = StudyContext(config, RunDir(config.run_dir))
    assert context.evaluates_checkpoint and context.source("pretrained") == str(checkpoint)
    pretrained = context.method("pretrained").eval_backbone().state_dict()
    random_init = context.method("random_init").eval_backbone().state_dict()
    assert all(torch.equal(pretrained[key], value) for key, value in state.items())
    weights = [key for key in state if key.endswith("weight") and state[key].ndim == 4]
    assert not any(torch.equal(random_init[key], state[key]) for key in weights)

    pretraining = load_config(W5_BASE, overrides(tiny_synthetic, tmp_path, checkpoint,
                                                 **{"study.phases": [{"name": "pretrain"}, {"name": "seg"}]}))  # fmt: skip
    assert not StudyContext(pretraining, RunDir(pretraining.run_dir)).evaluates_checkpoint  # pretraining starts there


def test_w5_study_scores_the_checkpoint_with_head_params_and_step_time(tiny_synthetic: Path, tmp_path: Path) -> None:
    checkpoint, _ = saved_backbone(tiny_synthetic, tmp_path)
    args = overrides(tiny_synthetic, tmp_path, checkpoint, **{"eval.random_init_baseline": True})
    assert main(["-q", "study", W5_BASE, *args]) == 0
    run = tmp_path / "heads"
    seg = json.loads((run / "eval/epoch_0/seg/seg.json").read_text())
    assert (seg["backbone"], seg["backbone_from"]) == ("pretrained", str(checkpoint))
    assert json.loads((run / "eval/epoch_0/seg/seg_random_init.json").read_text())["backbone_from"] == "random"
    config = load_config(W5_BASE, args)
    backbone = build_backbone(config.backbone)
    head = build_seg_head(config.eval.seg.head, backbone.out_channels, backbone.strides, 11)
    head_params = sum(p.numel() for p in head.parameters())
    assert seg["train"]["head_params"] == seg["train"]["trainable_params"] == head_params  # frozen backbone
    summary = json.loads((run / "summary.json").read_text())
    assert summary["head_params"] == head_params and 0 < summary["step_time_s"] < seg["train"]["seconds"] / 3
    values = read_run_scores(run).values
    assert values["head_params"] == head_params and values["mIoU"] == seg["summary"]["mIoU"]

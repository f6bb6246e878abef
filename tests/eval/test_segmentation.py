"""Segmentation finetuning on the tiny synthetic set: trainable sets, cached maps, `evaluate seg` outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY_SYNTHETIC

from pretrainlab.cli import main
from pretrainlab.config.loading import load_config
from pretrainlab.config.schema import Config
from pretrainlab.eval.segmentation import (
    build_segmentor,
    evaluate_segmentor,
    finetune_segmentation,
    train_collate,
)
from pretrainlab.eval.segmentation_data import build_seg_datasets
from pretrainlab.eval.segmentation_report import SECTION_TITLE, write_report_section
from pretrainlab.methods.segmentation import cache_backbone_maps
from pretrainlab.models.backbones import build_backbone


def seg_overrides(data_root: Path, output_root: Path, **extra: object) -> list[str]:
    values = {
        "data.root": str(data_root),
        "data.synthetic": dict(TINY_SYNTHETIC),
        "output_root": str(output_root),
        "engine.precision": "32",
        "backbone.arch": "resnet18",
        "backbone.small_input_stem": True,
        "backbone.layers": [1, 1, 1, 1],
        "backbone.channels": [8, 8, 16, 16],
        "engine.progress_bar": False,
        "eval.seg.crop_size": 32,
        "eval.seg.scale": [128, 32],
        "eval.seg.batch_size": 2,
        "eval.seg.eval_batch_size": 2,
        "eval.seg.iterations": 3,
        "eval.seg.num_examples": 2,
    }
    values.update(extra)
    return [f"{key}={json.dumps(value) if not isinstance(value, str) else value}" for key, value in values.items()]


def config_for(tiny_synthetic: Path, tmp_path: Path, **extra: object) -> Config:
    return load_config(None, seg_overrides(tiny_synthetic, tmp_path, **extra))


def test_synthetic_classes_come_from_classes_json(tiny_synthetic: Path, tmp_path: Path) -> None:
    train, val = build_seg_datasets(config_for(tiny_synthetic, tmp_path))
    assert train.class_names[:3] == ("sky", "ground", "wall") and train.num_classes == 11
    assert len(train) == TINY_SYNTHETIC["num_seg_train"] and len(val) == TINY_SYNTHETIC["num_seg_val"]
    image, label = val[0]
    assert image.shape == (3, 32, 32) and label.shape == (64, 64)  # val labels stay at the original size


def test_cached_maps_equal_recomputed_maps(tiny_synthetic: Path, tmp_path: Path) -> None:
    config = config_for(tiny_synthetic, tmp_path, **{"eval.seg.augment": False, "eval.seg.head.num_maps": 2})
    train, _ = build_seg_datasets(config)
    segmentor = build_segmentor(build_backbone(config.backbone), config, train.num_classes)
    segmentor.backbone.requires_grad_(False)
    maps, labels = cache_backbone_maps(segmentor, train, train_collate(config), 2, config.engine.precision)
    assert labels.shape == (len(train), 32, 32)
    assert [m.shape[-1] for m in maps[:-2]] == [0] * (len(maps) - 2)  # maps the head does not read
    images, batch_labels = train_collate(config)([train[1]])
    with torch.no_grad():
        expected = segmentor.backbone.eval()(images).maps
    torch.testing.assert_close(maps[-1][1:2], expected[-1])
    torch.testing.assert_close(labels[1:2], batch_labels)


@pytest.mark.parametrize("mode", ["frozen", "full"])
def test_finetune_changes_only_what_trains(tiny_synthetic: Path, tmp_path: Path, mode: str) -> None:
    config = config_for(tiny_synthetic, tmp_path, **{"eval.seg.mode": mode, "eval.seg.lr_multipliers": {"head": 10.0}})
    train, val = build_seg_datasets(config)
    backbone = build_backbone(config.backbone)
    backbone_before = {k: v.clone() for k, v in backbone.state_dict().items()}
    segmentor, log = finetune_segmentation(backbone, config, train, tmp_path / "seg", "test")
    head_before = {k: v.clone() for k, v in build_segmentor(build_backbone(config.backbone), config, train.num_classes).head.state_dict().items()}
    assert not log.cached_maps  # augmentation is on
    changed = any(not torch.equal(v, segmentor.backbone.state_dict()[k]) for k, v in backbone_before.items())
    assert changed == (mode == "full")  # frozen: BN running stats untouched too (eval mode)
    assert any(not torch.equal(v, segmentor.head.state_dict()[k]) for k, v in head_before.items())
    metric, examples = evaluate_segmentor(segmentor, val, config, num_examples=1)
    assert examples[0].shape == (64, 64)
    assert int(metric.areas().label.sum()) > 0


def test_slide_inference_runs(tiny_synthetic: Path, tmp_path: Path) -> None:
    config = config_for(
        tiny_synthetic, tmp_path, **{"eval.seg.inference": "slide", "eval.seg.slide_crop": 24, "eval.seg.slide_stride": 16}
    )
    train, val = build_seg_datasets(config)
    segmentor = build_segmentor(build_backbone(config.backbone), config, train.num_classes)
    metric, _ = evaluate_segmentor(segmentor, val, config)
    assert int(metric.areas().label.sum()) == int(sum((val[i][1] != 255).sum() for i in range(len(val))))


def test_a_broken_val_scene_is_left_out_and_counted(tiny_synthetic: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(tiny_synthetic / "segmentation", tmp_path / "segmentation"))
    config = config_for(tiny_synthetic, tmp_path, **{"eval.seg.root": str(root), "eval.seg.eval_batch_size": 1})
    train, val = build_seg_datasets(config)
    readable_pixels = int((val[1][1] != 255).sum())
    first_image = val.pairs[0][0]
    first_image.write_bytes(first_image.read_bytes()[:50])  # truncated
    segmentor = build_segmentor(build_backbone(config.backbone), config, train.num_classes)
    metric, _ = evaluate_segmentor(segmentor, val, config)
    assert int(metric.areas().label.sum()) == readable_pixels  # scene 1 once, scene 0 not replaced by it
    assert val.broken_indices == {0}


def test_evaluate_seg_cli_writes_json_plot_and_report(tiny_synthetic: Path, tmp_path: Path) -> None:
    overrides = seg_overrides(tiny_synthetic, tmp_path, name="segrun", **{"eval.seg.augment": False})
    assert main(["-q", "evaluate", "seg", "configs/quickstart.yaml", "--backbone-from", "random", *overrides]) == 0
    run_dir = tmp_path / "segrun"
    result = json.loads((run_dir / "eval" / "seg.json").read_text())
    assert set(result["summary"]) == {"mIoU", "mAcc", "aAcc"}
    assert list(result["per_class"])[:3] == ["sky", "ground", "wall"]
    assert result["backbone"] == "random_init" and result["train"]["cached_maps"]
    assert result["config"]["iterations"] == 3
    assert (run_dir / "eval" / "seg_examples.png").stat().st_size > 0
    assert (run_dir / "report.md").read_text().count(SECTION_TITLE) == 1

    checkpoint = tmp_path / "backbone.pt"
    torch.save(build_backbone(load_config(None, overrides).backbone).state_dict(), checkpoint)
    assert main(["-q", "evaluate", "seg", "configs/quickstart.yaml", "--backbone-from", str(checkpoint), *overrides]) == 0
    assert json.loads((run_dir / "eval" / "seg.json").read_text())["backbone"] == "pretrained"
    assert (run_dir / "report.md").read_text().count(SECTION_TITLE) == 1  # replaced, not appended
    missing = ["-q", "evaluate", "seg", "configs/quickstart.yaml", "--backbone-from", str(tmp_path / "nope")]
    assert main([*missing, *overrides]) == 2


def test_report_section_replaces_only_itself(tmp_path: Path) -> None:
    (tmp_path / "report.md").write_text(f"# Run\n\n## kNN\n\nx\n\n{SECTION_TITLE}\n\nold\n\n## Summary\n\ny\n")
    write_report_section(tmp_path, f"{SECTION_TITLE}\n\nnew\n")
    text = (tmp_path / "report.md").read_text()
    assert "old" not in text and "new" in text and "## kNN" in text and "## Summary\n\ny" in text

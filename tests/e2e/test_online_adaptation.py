"""W2's online runner (configs/w2_uda/rain_sequence.yaml) on the tiny synthetic scenes: the domains × steps
table, the per-step domain log, the summary; a missing domain is named before training; a bad label file
is named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import REPO_ROOT, TINY_SYNTHETIC, _yaml_inline

from pretrainlab.config import ConfigError, load_config
from pretrainlab.study.runner import run_study

CONFIG = REPO_ROOT / "configs" / "w2_uda" / "rain_sequence.yaml"


def overrides(data_root: Path, output_root: Path, **extra: object) -> list[str]:
    values = {
        "data.root": str(data_root), "data.synthetic": TINY_SYNTHETIC, "output_root": str(output_root),
        "engine.precision": "32", "engine.progress_bar": False, "eval.seg.iterations": 4,
        "eval.seg.warmup_iters": 0, "eval.seg.batch_size": 2, "eval.seg.eval_batch_size": 2,
        "online.sequence": ["clear", "25", "200"], "online.steps_per_domain": 2, "online.batch_size": 2,
        "online.replay": {"buffer": 4, "mode": "rare_class", "min_pixels": 10}, **extra,
    }  # fmt: skip
    return [f"{key}={_yaml_inline(value)}" for key, value in values.items()]


@pytest.mark.slow
def test_the_rain_sequence_writes_the_domain_table_and_logs_each_steps_domain(
    tiny_synthetic: Path, tmp_path: Path
) -> None:
    config = load_config(CONFIG, overrides(tiny_synthetic, tmp_path, **{"online.domains_root": str(tmp_path / "rain")}))
    assert [p.name for p in config.study.phases] == ["source", "adapt", "adapt", "adapt"]
    summary = run_study(config)
    run = config.run_dir
    lines = (run / "eval" / "domains.csv").read_text().splitlines()
    assert lines[0] == "step,clear,25mm,200mm" and [line.split(",")[0] for line in lines[1:]] == [
        "before", "1: clear", "2: 25mm", "3: 200mm"]  # fmt: skip
    assert (run / "plots" / "domains.png").is_file()
    assert set(summary["final_miou"]) == {"clear", "25mm", "200mm"} and summary["mean_target_miou"] >= 0
    assert all(value >= 0 for value in summary["forgetting"].values())
    metrics = [json.loads(line) for line in (run / "adapt" / "metrics.jsonl").read_text().splitlines()]
    domains = [m["domain"] for m in metrics if "domain" in m]
    assert domains == ["clear", "clear", "25mm", "25mm", "200mm", "200mm"]
    assert [m["step"] for m in metrics if "domain" in m] == list(range(6))


@pytest.mark.slow
def test_a_missing_domain_is_named_before_any_training(tiny_synthetic: Path, tmp_path: Path) -> None:
    empty = tmp_path / "no_rain"
    (empty / "leftImg8bit" / "train" / "clear").mkdir(parents=True)
    config = load_config(CONFIG, overrides(tiny_synthetic, tmp_path, **{
        "online.domains_root": str(empty), "online.render_rain": False}))  # fmt: skip
    with pytest.raises(FileNotFoundError, match=r"no images for domain\(s\) clear \(train\), clear \(val\), 25mm"):
        run_study(config)
    assert not (config.run_dir / "adapt" / "source.pt").exists()


@pytest.mark.slow
def test_a_label_outside_the_classes_is_named(tiny_synthetic: Path, tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(tiny_synthetic / "segmentation", source)
    bad = sorted((source / "annotations" / "validation").glob("*.png"))[0]
    label = cv2.imread(str(bad), cv2.IMREAD_UNCHANGED)
    label[0, 0] = 200  # the scenes have 3 + 8 classes
    cv2.imwrite(str(bad), label.astype(np.uint8))
    config = load_config(CONFIG, overrides(tiny_synthetic, tmp_path, **{
        "eval.seg.root": str(source), "online.domains_root": str(tmp_path / "rain"), "online.sequence": ["clear", "25"]}))  # fmt: skip
    with pytest.raises(ValueError, match=f"{bad.stem}_gtFine_labelTrainIds.png: label values \\[199\\]"):
        run_study(config)


@pytest.mark.slow
def test_runs_with_the_same_source_recipe_share_one_source_model(tiny_synthetic: Path, tmp_path: Path) -> None:
    shared = {"online.domains_root": str(tmp_path / "rain"), "online.source_cache": "source_models",
              "online.sequence": ["clear", "25"]}  # fmt: skip
    dacs = load_config(CONFIG, overrides(tiny_synthetic, tmp_path, name="dacs", **shared))
    source_only = load_config(CONFIG, overrides(tiny_synthetic, tmp_path, name="source_only", **{
        **shared, "online.adaptation": "source_only"}))  # fmt: skip
    dacs_summary, source_only_summary = run_study(dacs), run_study(source_only)
    stored = next((tmp_path / "source_models").iterdir()) / "source.pt"
    assert dacs_summary["phases"][0]["source_model"] == "trained"
    assert source_only_summary["phases"][0]["source_model"] == str(stored)
    assert (source_only.run_dir / "adapt" / "00_source" / "metrics_source.jsonl").exists() is False
    assert (source_only.run_dir / "adapt" / "source.pt").read_bytes() == (dacs.run_dir / "adapt" / "source.pt").read_bytes()
    assert source_only_summary["phases"][0]["miou"] == dacs_summary["phases"][0]["miou"]
    # source_only trains nothing: every row repeats the source model's scores
    assert [r["miou"] for r in source_only_summary["phases"][1:]] == [dacs_summary["phases"][0]["miou"]] * 2
    assert not (source_only.run_dir / "adapt" / "metrics.jsonl").exists()
    assert (dacs_summary["method"], source_only_summary["method"]) == ("dacs", "source_only")
    longer = load_config(CONFIG, overrides(tiny_synthetic, tmp_path, name="longer", **{
        **shared, "eval.seg.iterations": 5}))  # fmt: skip
    assert run_study(longer)["phases"][0]["source_model"] == "trained"
    assert len(list((tmp_path / "source_models").iterdir())) == 2


@pytest.mark.slow
def test_adapters_ewc_and_the_detector_policy_run_and_are_reported(tiny_synthetic: Path, tmp_path: Path) -> None:
    common = {"online.domains_root": str(tmp_path / "rain"), "online.source_cache": "source_models",
              "online.sequence": ["clear", "200"], "online.steps_per_domain": 4}  # fmt: skip
    full = run_study(load_config(CONFIG, overrides(tiny_synthetic, tmp_path, name="full", **common)))
    adapted = load_config(CONFIG, overrides(tiny_synthetic, tmp_path, name="adapters", **{
        **common, "online.adapters": {"train": "adapters", "kind": "adaptformer", "stages": "half"},
        "online.ewc": {"weight": 10.0, "fisher_batches": 2}, "online.profile_steps": 1,
        "online.detector": {"signal": "teacher_confidence", "window": 2, "threshold": 1e-9,
                            "policy": "after_change", "train_steps_after_change": 1}}))  # fmt: skip
    summary = run_study(adapted)
    assert summary["method"] == "dacs (adaptformer adapters, ewc, detector, after_change)"
    assert 0 < summary["trainable_params"] < full["trainable_params"] / 2
    assert "| `backbone (adapters)` | 107,584 | 107,584 | 0 |" in (adapted.run_dir / "adapt" / "params.md").read_text()
    assert (adapted.run_dir / "adapt" / "ewc.pt").is_file()
    records = [json.loads(line) for line in (adapted.run_dir / "adapt" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "domain" in r]
    assert [r["domain"] for r in steps] == ["clear"] * 4 + ["200mm"] * 4
    assert all(isinstance(r["detector_signal"], float) for r in steps)
    # the policy trains the first budget (step 0) and one step after each detection, nothing else
    events = [r["step"] for r in steps if r["domain_change"]]
    expected = {0} | {e + 1 for e in events}
    assert [r["step"] for r in steps if r["trained"]] == sorted(s for s in expected if s < 8)
    assert summary["detection"]["boundaries"] == [4] and summary["detection"]["events"] == events
    assert (adapted.run_dir / "plots" / "detector.png").is_file()
    profile = (adapted.run_dir / "adapt" / "profile.md").read_text()
    assert "| mixed backward |" in profile and "**adapters** (this run)" in profile
    assert summary["peak_memory_mb"] > 0 and 0 < summary["backward_x_forward"] < 2.5
    report = (adapted.run_dir / "report.md").read_text()
    for heading in ("## Online adaptation", "### Detected domain changes", "### Cost of one step", "### Parameters"):
        assert heading in report
    assert "## Pretraining" not in report and "![domains](plots/domains.png)" in report


@pytest.mark.slow
def test_tent_trains_only_norm_parameters(tiny_synthetic: Path, tmp_path: Path) -> None:
    config = load_config(CONFIG, overrides(tiny_synthetic, tmp_path, name="tent", **{
        "online.domains_root": str(tmp_path / "rain"), "online.sequence": ["200"], "online.adaptation": "tent"}))  # fmt: skip
    summary = run_study(config)
    assert summary["method"] == "tent" and summary["phases"][-1]["trained_on"] == "200mm"
    assert 0 < summary["trainable_params"] < 20_000  # MiT-B0's LayerNorms and the decoder's BatchNorm


def test_tent_rejects_the_dacs_only_options() -> None:
    with pytest.raises(ConfigError, match="online.adapters applies to adaptation 'dacs', not 'tent'"):
        load_config(CONFIG, ["online.adaptation=tent", "online.adapters={train: decoder}"])

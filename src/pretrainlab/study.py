"""A study: generate data if missing -> pretrain (resuming) -> evaluate pretrained and
random-init backbones -> report. A finished study (summary.json present) is never recomputed."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

from pretrainlab.analysis.embeddings import plot_tsne_panels
from pretrainlab.analysis.params import encoder_num_params
from pretrainlab.config.schema import Config
from pretrainlab.data.loaders import build_eval_loaders, ensure_dataset
from pretrainlab.engine.run import (
    checkpoint_path,
    load_pretrained_method,
    pretrain,
    random_init_method,
)
from pretrainlab.eval.knn import extract_features
from pretrainlab.eval.knn_eval import evaluate_knn, write_json
from pretrainlab.eval.linear_probe import evaluate_linear
from pretrainlab.eval.segmentation_report import (
    seg_report_section,
    write_report_section,
)
from pretrainlab.eval.segmentation_run import PLOT_NAME, evaluate_segmentation
from pretrainlab.models.backbones.base import Backbone
from pretrainlab.report.run_report import write_run_report

log = logging.getLogger(__name__)


def load_eval_backbones(
    run_dir: Path, *, random_init: bool
) -> tuple[Config, dict[str, Backbone], DataLoader, DataLoader]:
    """A run's config, its `pretrained` (and `random_init`) eval backbones, and the train / val eval loaders."""
    config, method, _ = load_pretrained_method(run_dir)
    ensure_dataset(config)
    train_loader, val_loader = build_eval_loaders(config)
    backbones = {"pretrained": method.eval_backbone()}
    if random_init:
        backbones["random_init"] = random_init_method(config).eval_backbone()
    return config, backbones, train_loader, val_loader


def evaluate_knn_run(run_dir: Path, *, random_init: bool = True) -> dict[str, dict[str, Any]]:
    """Final kNN of a run's pretrained backbone (and its random-init copy) -> eval/knn.json."""
    config, backbones, train_loader, val_loader = load_eval_backbones(run_dir, random_init=random_init)
    results = {name: evaluate_knn(bb, train_loader, val_loader, config.eval.knn) for name, bb in backbones.items()}
    write_json(run_dir / "eval" / "knn.json", results)
    plot_embeddings(backbones, val_loader, run_dir / "plots" / "tsne.png")
    return results


def evaluate_linear_run(run_dir: Path, *, random_init: bool = True) -> dict[str, dict[str, Any]]:
    """Linear probe of a run's pretrained backbone (and its random-init copy) -> eval/linear.json."""
    config, backbones, train_loader, val_loader = load_eval_backbones(run_dir, random_init=random_init)
    results = {
        name: evaluate_linear(bb, train_loader, val_loader, config.eval.linear) for name, bb in backbones.items()
    }
    write_json(run_dir / "eval" / "linear.json", results)
    return results


def plot_embeddings(backbones: dict[str, Backbone], val_loader: DataLoader, path: Path, num_points: int = 600) -> None:
    """t-SNE of `pooled` val features of each backbone, coloured by class."""
    dataset = val_loader.dataset
    step = max(1, len(dataset) // num_points)
    subset = DataLoader(Subset(dataset, range(0, len(dataset), step)), batch_size=val_loader.batch_size)
    panels = {}
    for name, backbone in backbones.items():
        backbone.eval()
        features, labels = extract_features(lambda images, bb=backbone: bb(images).pooled, subset, torch.device("cpu"))
        panels[f"{name.replace('_', ' ')} (t-SNE)"] = (features, labels)
    plot_tsne_panels(panels, list(dataset.classes), path)


def evaluate_seg_run(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Segmentation finetuning (`eval.seg`) of a run's pretrained backbone and its random-init copy
    -> eval/seg.json, eval/seg_random_init.json, plots/seg_examples.png."""
    config, method, _ = load_pretrained_method(run_dir)
    backbones = {"pretrained": method.eval_backbone(), "random_init": random_init_method(config).eval_backbone()}
    sources = {"pretrained": str(checkpoint_path(run_dir)), "random_init": "random"}
    return evaluate_segmentation(config, backbones, sources, run_dir)


def run_study(config: Config) -> dict[str, Any]:
    run_dir = config.run_dir
    summary_path = run_dir / "summary.json"
    if summary_path.exists():
        log.info("%s is finished (summary.json exists); not recomputing", run_dir)
        return json.loads(summary_path.read_text())
    started = time.perf_counter()
    ensure_dataset(config)
    pretrain(config, resume=True)
    pretrain_s = time.perf_counter() - started
    knn = evaluate_knn_run(run_dir, random_init=True)
    summary = {
        "knn_top1": {name: scores["top1"] for name, scores in knn.items()},
        "knn_per_k": {name: scores["per_k"] for name, scores in knn.items()},
        "method": config.method.name,
        "backbone": getattr(config.backbone, "arch", config.backbone.name),
        "epochs": config.engine.max_epochs,
        "num_params": encoder_num_params(random_init_method(config)),
        "pretrain_s": pretrain_s,
    }
    if config.eval.linear.enabled:
        linear = evaluate_linear_run(run_dir, random_init=True)
        summary["linear_top1"] = {name: scores["top1"] for name, scores in linear.items()}
    seg = None
    if config.eval.seg.enabled:
        seg_started = time.perf_counter()
        seg = evaluate_seg_run(run_dir)
        summary["seg_miou"] = {name: result["summary"]["mIoU"] for name, result in seg.items()}
        summary["seg_s"] = time.perf_counter() - seg_started
    summary["wall_time_s"] = time.perf_counter() - started
    write_run_report(run_dir, summary)
    if seg is not None:  # write_run_report rewrote report.md
        write_report_section(run_dir, seg_report_section(seg, PLOT_NAME if config.eval.seg.num_examples else None))
    write_json(summary_path, summary)
    return summary

"""A study: generate data if missing -> pretrain (resuming) -> evaluate pretrained and
random-init backbones -> report. A finished study (summary.json present) is never recomputed."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

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
from pretrainlab.eval.knn_eval import knn_scores, write_json
from pretrainlab.eval.linear_probe import linear_probe_scores
from pretrainlab.eval.pooled_features import PooledFeatures, extract_pooled_features
from pretrainlab.eval.segmentation_report import (
    seg_report_section,
    write_report_section,
)
from pretrainlab.eval.segmentation_run import PLOT_NAME, evaluate_segmentation
from pretrainlab.methods.base import Method
from pretrainlab.models.backbones.base import Backbone
from pretrainlab.report.run_report import write_run_report

log = logging.getLogger(__name__)


@dataclass
class RunForEval:
    """What every post-training evaluation of a run needs, loaded once: the config, the pretrained
    method (from `last.ckpt`) and its random-init copy, the classification eval loaders, and
    each backbone's pooled features of them (extracted on first use, shared by kNN, the linear
    probe and the t-SNE plot)."""

    config: Config
    methods: dict[str, Method]  # "pretrained" and, if asked for, "random_init"
    train_loader: DataLoader
    val_loader: DataLoader
    _features: dict[str, PooledFeatures] = field(default_factory=dict)

    @property
    def backbones(self) -> dict[str, Backbone]:
        return {name: method.eval_backbone() for name, method in self.methods.items()}

    def pooled_features(self) -> dict[str, PooledFeatures]:
        for name, backbone in self.backbones.items():
            if name not in self._features:
                self._features[name] = extract_pooled_features(backbone, self.train_loader, self.val_loader)
        return self._features


def load_run_for_eval(run_dir: Path, *, random_init: bool) -> RunForEval:
    config, method, _ = load_pretrained_method(run_dir)
    ensure_dataset(config)
    train_loader, val_loader = build_eval_loaders(config)
    methods = {"pretrained": method}
    if random_init:
        methods["random_init"] = random_init_method(config)
    return RunForEval(config, methods, train_loader, val_loader)


def evaluate_knn_run(run_dir: Path, *, random_init: bool = True, run: RunForEval | None = None) -> dict[str, Any]:
    """Final kNN of a run's pretrained backbone (and its random-init copy) -> eval/knn.json, plots/tsne.png."""
    run = run or load_run_for_eval(run_dir, random_init=random_init)
    features = run.pooled_features()
    results = {name: knn_scores(f, run.config.eval.knn) for name, f in features.items()}
    write_json(run_dir / "eval" / "knn.json", results)
    plot_embeddings(features, list(run.val_loader.dataset.classes), run_dir / "plots" / "tsne.png")
    return results


def evaluate_linear_run(run_dir: Path, *, random_init: bool = True, run: RunForEval | None = None) -> dict[str, Any]:
    """Linear probe of a run's pretrained backbone (and its random-init copy) -> eval/linear.json."""
    run = run or load_run_for_eval(run_dir, random_init=random_init)
    results = {name: linear_probe_scores(f, run.config.eval.linear) for name, f in run.pooled_features().items()}
    write_json(run_dir / "eval" / "linear.json", results)
    return results


def plot_embeddings(
    features: dict[str, PooledFeatures], class_names: list[str], path: Path, num_points: int = 600
) -> None:
    """t-SNE of about `num_points` evenly spaced val features of each backbone, coloured by class."""
    panels = {}
    for name, f in features.items():
        step = max(1, len(f.val) // num_points)
        panels[f"{name.replace('_', ' ')} (t-SNE)"] = (f.val[::step], f.val_labels[::step])
    plot_tsne_panels(panels, class_names, path)


def evaluate_seg_run(run_dir: Path, run: RunForEval) -> dict[str, dict[str, Any]]:
    """Segmentation finetuning (`eval.seg`) of a run's pretrained backbone and its random-init copy
    -> eval/seg.json, eval/seg_random_init.json, plots/seg_examples.png."""
    sources = {"pretrained": str(checkpoint_path(run_dir)), "random_init": "random"}
    return evaluate_segmentation(run.config, run.backbones, sources, run_dir)


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
    run = load_run_for_eval(run_dir, random_init=True)
    knn = evaluate_knn_run(run_dir, run=run)
    summary = {
        "knn_top1": {name: scores["top1"] for name, scores in knn.items()},
        "knn_per_k": {name: scores["per_k"] for name, scores in knn.items()},
        "method": config.method.name,
        "backbone": getattr(config.backbone, "arch", config.backbone.name),
        "epochs": config.engine.max_epochs,
        "num_params": encoder_num_params(run.methods["pretrained"]),
        "pretrain_s": pretrain_s,
    }
    if config.eval.linear.enabled:
        linear = evaluate_linear_run(run_dir, run=run)
        summary["linear_top1"] = {name: scores["top1"] for name, scores in linear.items()}
    seg = None
    if config.eval.seg.enabled:
        seg_started = time.perf_counter()
        seg = evaluate_seg_run(run_dir, run)
        summary["seg_miou"] = {name: result["summary"]["mIoU"] for name, result in seg.items()}
        summary["seg_s"] = time.perf_counter() - seg_started
    summary["wall_time_s"] = time.perf_counter() - started
    write_run_report(run_dir, summary)
    if seg is not None:  # write_run_report rewrote report.md
        write_report_section(run_dir, seg_report_section(seg, PLOT_NAME if config.eval.seg.num_examples else None))
    write_json(summary_path, summary)
    return summary

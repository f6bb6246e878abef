"""A study: generate data if missing -> pretrain (resuming) -> evaluate pretrained and
random-init backbones -> report. A finished study (summary.json present) is never recomputed."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from pretrainlab.config.schema import Config
from pretrainlab.data.loaders import build_eval_loaders, ensure_dataset
from pretrainlab.engine.run import load_pretrained_method, pretrain, random_init_method
from pretrainlab.eval.knn_eval import evaluate_knn, write_json
from pretrainlab.report.run_report import write_run_report

log = logging.getLogger(__name__)


def evaluate_knn_run(run_dir: Path, *, random_init: bool = True) -> dict[str, dict[str, Any]]:
    """Final kNN of a run's pretrained backbone (and its random-init copy) -> eval/knn.json."""
    config, method, _ = load_pretrained_method(run_dir)
    ensure_dataset(config)
    train_loader, val_loader = build_eval_loaders(config)
    results = {"pretrained": evaluate_knn(method.eval_backbone(), train_loader, val_loader, config.eval.knn)}
    if random_init:
        baseline = random_init_method(config).eval_backbone()
        results["random_init"] = evaluate_knn(baseline, train_loader, val_loader, config.eval.knn)
    write_json(run_dir / "eval" / "knn.json", results)
    return results


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
        "pretrain_s": pretrain_s,
        "wall_time_s": time.perf_counter() - started,
    }
    write_run_report(run_dir, summary)
    write_json(summary_path, summary)
    return summary

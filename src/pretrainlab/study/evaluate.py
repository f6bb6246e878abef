"""Evaluations of a run by hand (`pretrainlab evaluate knn|linear --run DIR`): the run's current
pretrained state and its random-init copy, written to the run's `eval/` folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pretrainlab.analysis.embeddings import plot_embeddings
from pretrainlab.data.loaders import ensure_dataset
from pretrainlab.eval.knn_eval import knn_scores
from pretrainlab.eval.linear_probe import linear_probe_scores
from pretrainlab.run_dir import RunDir
from pretrainlab.run_lock import hold_run_lock
from pretrainlab.study.linear_phase import linear_probe_features
from pretrainlab.study.phase import StudyContext
from pretrainlab.study.run import load_run_config


def run_context(run_dir: Path, *, random_init: bool) -> StudyContext:
    config = load_run_config(run_dir)
    config = config.model_copy(update={"eval": config.eval.model_copy(update={"random_init_baseline": random_init})})
    ensure_dataset(config)
    return StudyContext(config, RunDir(run_dir))


def evaluate_knn_run(run_dir: Path, *, random_init: bool = True) -> dict[str, Any]:
    """kNN of the run's pretrained backbone (and its random-init copy) -> eval/knn.json, plots/tsne.png
    (holding the run's lock)."""
    context = run_context(run_dir, random_init=random_init)
    with hold_run_lock(run_dir):
        features = context.pooled_features()
        results = {name: knn_scores(f, context.config.eval.knn) for name, f in features.items()}
        context.run.write_eval("knn", results)
        plot_embeddings(features, list(context.eval_loaders()[1].dataset.classes), context.run.plots / "tsne.png")
    return results


def evaluate_linear_run(run_dir: Path, *, random_init: bool = True) -> dict[str, Any]:
    """Linear probe of the run's pretrained backbone (and its random-init copy) -> eval/linear.json (holding
    the run's lock)."""
    context = run_context(run_dir, random_init=random_init)
    linear = context.config.eval.linear
    with hold_run_lock(run_dir):
        results = {name: linear_probe_scores(f, linear) | {"features": linear.describe_features()}
                   for name, f in linear_probe_features(context).items()}  # fmt: skip
        context.run.write_eval("linear", results)
    return results

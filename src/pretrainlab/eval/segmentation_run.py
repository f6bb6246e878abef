"""`pretrainlab evaluate seg` and the study's `seg` phase: finetune each backbone on the `eval.seg`
dataset (on the engine: every process of a multi-process run trains), evaluate (rank 0), and write
seg*.json and seg_examples.png into an output folder.

`--backbone-from` takes a run directory (the method's eval backbone with the weights of
`pretrain/checkpoints/last.ckpt`), a checkpoint file (loaded into `config.backbone` with a key
report), or `random` (the run's backbone exactly as pretraining started).
"""

from __future__ import annotations

import itertools
import logging
import time
from pathlib import Path
from typing import Any

import cv2

from pretrainlab.config.schema import Config
from pretrainlab.distributed import is_rank_zero
from pretrainlab.eval.segmentation import evaluate_segmentor, finetune_segmentation
from pretrainlab.eval.segmentation_data import build_seg_datasets
from pretrainlab.eval.segmentation_report import plot_seg_examples, seg_result
from pretrainlab.models.backbones import Backbone, build_backbone
from pretrainlab.run_dir import write_json

log = logging.getLogger(__name__)
RANDOM = "random"
PLOT_NAME = "seg_examples.png"


def load_seg_backbone(spec: str, config: Config) -> tuple[str, Backbone]:
    """(name, backbone) for `--backbone-from`: a run directory, a checkpoint file or `random`."""
    from pretrainlab.study.run import load_pretrained_method, random_init_method

    if spec == RANDOM:
        return "random_init", random_init_method(config).eval_backbone()
    path = Path(spec)
    if path.is_dir():
        _, method, _ = load_pretrained_method(path)
        return "pretrained", method.eval_backbone()
    if path.is_file():
        from pretrainlab.models.checkpoint import load_backbone_checkpoint

        backbone = build_backbone(config.backbone, config.in_chans)
        load_backbone_checkpoint(backbone, path)
        return "pretrained", backbone
    raise FileNotFoundError(f"--backbone-from {spec}: not a run directory, a checkpoint file or '{RANDOM}'")


def result_name(name: str, *, is_first: bool) -> str:
    """seg.json for the first backbone, seg_<name>.json for the others."""
    return "seg.json" if is_first else f"seg_{name}.json"


def evaluate_segmentation(
    config: Config, backbones: dict[str, Backbone], sources: dict[str, str], out_dir: Path
) -> dict[str, dict[str, Any]]:
    """Finetune and evaluate every backbone; write the results into `out_dir`; return them by name
    (on rank 0; the other processes of a multi-process run only train and return {})."""
    seg = config.eval.seg
    train, val = build_seg_datasets(config)
    results: dict[str, dict[str, Any]] = {}
    predictions: dict[str, list] = {}
    for name, backbone in backbones.items():
        segmentor, train_log = finetune_segmentation(backbone, config, train, out_dir, name)
        if not is_rank_zero():
            continue
        started = time.perf_counter()
        metric, examples = evaluate_segmentor(segmentor, val, config, num_examples=seg.num_examples)
        extra = {
            "backbone": name,
            "backbone_from": sources.get(name, ""),
            "num_train": len(train),
            "num_val": len(val),
            "train": {
                "iterations": train_log.iterations,
                "seconds": train_log.seconds,
                "step_time_s": train_log.step_seconds,
                "head_params": train_log.head_params,
                "trainable_params": train_log.trainable_params,
                "cached_maps": train_log.cached_maps,
                "final_loss": train_log.losses[-1][1] if train_log.losses else None,
                "losses": train_log.losses,
                "num_trainable_tensors": len(train_log.trainable.trainable),
                "num_frozen_tensors": len(train_log.trainable.frozen),
                "broken_samples": train.num_broken,
            },
            "eval_seconds": time.perf_counter() - started,
            "config": seg.model_dump(mode="json"),
        }
        results[name] = seg_result(metric.summary(), train.class_names, extra)
        predictions[name] = examples
        write_json(out_dir / result_name(name, is_first=len(results) == 1), results[name])
        log.info("segmentation %s: %s", name, results[name]["summary"])
    if results and seg.num_examples > 0:
        readable = (val.load(i) for i in range(len(val)) if i not in val.broken_indices)  # the evaluation met them
        samples = list(itertools.islice(readable, seg.num_examples))
        images = [cv2.cvtColor(image, cv2.COLOR_BGR2RGB) for _, image, _ in samples]
        labels = [label for _, _, label in samples]
        plot_seg_examples(images, labels, predictions, train.palette, out_dir / PLOT_NAME)
    return results

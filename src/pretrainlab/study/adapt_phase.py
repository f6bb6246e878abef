"""Phases `source` and `adapt` of online adaptation (W2; the data flow is in `study/online.py`).

`source`: the starting model (trained on the labelled source set with `eval.seg`'s recipe, taken
from `online.source_checkpoint`, or from the store of `online.source_cache`), saved to
`adapt/source.pt`, and its mIoU on every domain: the table's `before` row. `adapt` (one per entry
`step` of `online.sequence`): train on that domain with DACS, then the mIoU on every domain: one
row; `source_only` trains nothing, so its rows repeat the `before` scores (not re-evaluated). Each result
carries the table so far's summary (mean target mIoU, final mIoU per domain, forgetting); the
table is rewritten after every phase as `eval/domains.csv`, `eval/domains.md` and
`plots/domains.png`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from pretrainlab.precision import autocast, resolve_precision
from pretrainlab.run_dir import write_text
from pretrainlab.study.phase import PHASES, PhaseConfig, StudyContext

if TYPE_CHECKING:
    from pretrainlab.config.schema import Config
    from pretrainlab.data.formats.segmentation_datasets import SegmentationDataset, SegmentationLayout
    from pretrainlab.data.train_data import TrainData
    from pretrainlab.engine.optim import OptimConfig
    from pretrainlab.methods.base import Method
    from pretrainlab.eval.segmentation_model import Segmentor
    from pretrainlab.run_dir import Phase, RunDir

log = logging.getLogger(__name__)

SUMMARY_KEYS = ("mean_target_miou", "final_miou", "forgetting")
ADAPT_SUMMARY_KEYS = (*SUMMARY_KEYS, "trainable_params", "step_time_s", "peak_memory_mb", "profile_step_s",
                      "backward_x_forward", "detection")


class SourcePhaseConfig(PhaseConfig):
    """The model online adaptation starts from, and its mIoU on every domain."""

    name: Literal["source"]
    trains: ClassVar[bool] = True
    summary_keys: ClassVar[tuple[str, ...]] = SUMMARY_KEYS

    def check(self, config: Config, key: str) -> None:
        if config.online is None:
            raise ValueError(f"{key}: phase source needs the `online` section")
        if config.online.source_checkpoint is None and config.eval.seg.mode != "full":
            raise ValueError(f"{key}: the source model trains every parameter: set eval.seg.mode: full")

    def folder(self, config: Config, index: int, checkpoint_epoch: Callable[[], int]) -> str:
        return f"adapt/{index:02d}_source"


class AdaptPhaseConfig(PhaseConfig):
    """Adapt to domain `online.sequence[step]`, then score every domain."""

    name: Literal["adapt"]
    trains: ClassVar[bool] = True
    summary_keys: ClassVar[tuple[str, ...]] = ADAPT_SUMMARY_KEYS
    step: int = Field(ge=0, description="index into online.sequence")

    def check(self, config: Config, key: str) -> None:
        if config.online is None:
            raise ValueError(f"{key}: phase adapt needs the `online` section")
        if self.step >= len(config.online.sequence):
            raise ValueError(f"{key}.step={self.step}: online.sequence has {len(config.online.sequence)} domains")
        head = config.eval.seg.head
        if config.online.adaptation != "source_only" and not head.outputs_logits:
            raise ValueError(f"{key}: online.adaptation={config.online.adaptation} reads the head's output as class "
                             f"logits (softmax, entropy, pseudo-labels), and the {head.name} head outputs class "
                             "scores of another kind; choose another eval.seg.head")  # fmt: skip

    def folder(self, config: Config, index: int, checkpoint_epoch: Callable[[], int]) -> str:
        from pretrainlab.study.online import domain_label

        return f"adapt/{index:02d}_step{self.step + 1}_{domain_label(config.online.sequence[self.step])}"


def source_path(run: RunDir) -> Path:
    return run.adapt_dir / "source.pt"


def build_source_segmentor(config: Config, num_classes: int) -> Segmentor:
    """Backbone (initialised with the seed `config.seed`, whatever ran before) and `eval.seg.head`."""
    import torch

    from pretrainlab.eval.segmentation import build_segmentor
    from pretrainlab.models.backbones.base import build_backbone

    torch.manual_seed(config.seed)
    return build_segmentor(build_backbone(config.backbone, config.in_chans), config, num_classes)


@PHASES.register(SourcePhaseConfig)
def run_source_phase(phase: SourcePhaseConfig, place: Phase, context: StudyContext) -> dict[str, Any]:
    from pretrainlab.distributed import is_rank_zero
    from pretrainlab.eval.segmentation import finetune_segmentation
    from pretrainlab.eval.segmentation_data import build_seg_datasets, segmentation_root
    from pretrainlab.run_dir import save_checkpoint
    from pretrainlab.study.online import ensure_domains, load_state
    from pretrainlab.study.source_models import store_source, stored_source_dir, stored_trainer, take_stored_source

    started = time.perf_counter()
    config, run_file = context.config, source_path(context.run)
    source_train, _ = build_seg_datasets(config)
    ensure_domains(config, segmentation_root(config))  # a missing domain is named before any training
    stored = stored_source_dir(config)
    segmentor = build_source_segmentor(config, source_train.num_classes)
    if config.online.source_checkpoint is not None:
        origin = str(config.online.source_checkpoint)
        load_state(segmentor, config.online.source_checkpoint)
        if is_rank_zero():
            save_checkpoint({"segmentor": segmentor.state_dict()}, run_file)
    elif stored is not None and (stored / "source.pt").is_file():
        # this run trained it when it was killed between storing the model and finishing the phase
        origin = "trained" if stored_trainer(stored) == str(config.run_dir) else str(stored / "source.pt")
        load_state(segmentor, stored / "source.pt")
        if is_rank_zero():
            take_stored_source(stored, run_file)
    else:
        origin = "trained"
        segmentor, _ = finetune_segmentation(segmentor.backbone, config, source_train, place.dir, "source")
        if is_rank_zero():
            save_checkpoint({"segmentor": segmentor.state_dict()}, run_file)
            if stored is not None:
                store_source(stored, run_file, config)
    row = {"label": "before", "trained_on": None, "miou": evaluate_domains(config, segmentor, source_train.layout)}
    return {**row, **table_summary(context.run, config, row), "source_model": origin,
            "seconds": time.perf_counter() - started}  # fmt: skip


@PHASES.register(AdaptPhaseConfig)
def run_adapt_phase(phase: AdaptPhaseConfig, place: Phase, context: StudyContext) -> dict[str, Any]:
    from pretrainlab.engine.trainer import fit
    from pretrainlab.eval.segmentation import train_collate
    from pretrainlab.eval.segmentation_data import build_seg_datasets, train_pipeline
    from pretrainlab.study.online import (
        DomainLog,
        constant_schedules,
        domain_dataset,
        domain_label,
        load_state,
        paired_train_data,
    )

    started = time.perf_counter()
    config, online = context.config, context.config.online
    domain = online.sequence[phase.step]
    if online.adaptation == "source_only":  # the model stays the source model: its scores are the source phase's
        scores = next(r["miou"] for r in context.run.phase_results() if r["kind"] == "source")
        cost = {"trainable_params": 0}  # no training step: no step time
    else:
        source_train, _ = build_seg_datasets(config)
        segmentor = build_source_segmentor(config, source_train.num_classes)
        load_state(segmentor, source_path(context.run))
        method = build_online_method(config, segmentor, source_train, context.run)
        target = domain_dataset(config, source_train.layout, domain, "train", train_pipeline(config))
        data = paired_train_data(config, source_train, target, train_collate(config))
        adapt_dir = context.run.adapt_dir
        profile = profile_step(config, method, data, adapt_dir) if online.profile_steps and phase.step == 0 else {}
        training_started = time.perf_counter()
        fit(method, data, optim=online_optim(config), make_schedules=constant_schedules(config), engine=config.engine,
            max_epochs=phase.step + 1, metrics_path=adapt_dir / "metrics.jsonl", logs_dir=adapt_dir / "logs",
            checkpoint=adapt_dir / "checkpoints" / "last.ckpt",
            callbacks=[DomainLog(adapt_dir / "metrics.jsonl", domain_label(domain))])  # fmt: skip
        cost = {"trainable_params": sum(p.numel() for p in method.segmentor().parameters() if p.requires_grad),
                "step_time_s": (time.perf_counter() - training_started) / online.steps_per_domain}  # fmt: skip
        cost.update(profile)
        if online.detector is not None:
            cost["detection"] = report_detections(context.run, config)
        scores = evaluate_domains(config, method.segmentor(), source_train.layout)
    label = domain_label(domain)
    row = {"label": f"{phase.step + 1}: {label}", "trained_on": label, "miou": scores}
    return {**row, **table_summary(context.run, config, row), **cost, "seconds": time.perf_counter() - started}


def build_online_method(config: Config, segmentor: Segmentor, source: SegmentationDataset, run: RunDir) -> Method:
    """TENT, or DACS with what trains decided by `online.adapters` (adapters injected before DACS copies the student
    into its teacher) and, with `online.ewc.weight`, the EWC anchor; the parameter table goes to the log and
    `adapt/params.md`."""
    from pretrainlab.analysis.param_table import param_rows, param_table_markdown, param_table_text
    from pretrainlab.distributed import is_rank_zero
    from pretrainlab.engine.freeze import set_trainable
    from pretrainlab.eval.segmentation_data import mean_std_255
    from pretrainlab.methods.dacs import build_dacs
    from pretrainlab.methods.tent import build_tent
    from pretrainlab.models.adapters import inject_adapters, trainable_patterns
    from pretrainlab.study.online import source_fisher

    online = config.online
    if online.adaptation == "tent":
        method = build_tent(segmentor, online.tent)
    else:
        names = inject_adapters(segmentor, online.adapters)
        set_trainable(segmentor, trainable_patterns(online.adapters, names))
        ewc = source_fisher(config, segmentor, source, run.adapt_dir / "ewc.pt") if online.ewc.weight > 0 else None
        mean, std = mean_std_255(config)
        method = build_dacs(segmentor, online.dacs, seed=config.seed, mean=mean, std=std, ewc=ewc,
                            detector=online.detector)  # fmt: skip
    rows = param_rows(method.segmentor())
    log.info("parameters of the adapted model\n%s", param_table_text(rows))
    if is_rank_zero():
        run.adapt_dir.mkdir(parents=True, exist_ok=True)
        write_text(run.adapt_dir / "params.md", param_table_markdown(rows, title=f"{config.name}: parameters"))
    return method


def profile_step(config: Config, method: Method, data: TrainData, adapt_dir: Path) -> dict[str, float]:
    """Profile `online.profile_steps` steps of a copy of `method` on the first batches of `data`, in the run's
    precision (`analysis/step_profile.py`): the step table and where the backward goes -> `adapt/profile.md` and
    `profile.json`; returns peak_memory_mb, profile_step_s and backward_x_forward (the configured backward's FLOPs
    over the forward's; DACS only)."""
    import copy
    import json

    import torch

    from pretrainlab.analysis.backward_split import backward_split
    from pretrainlab.analysis.step_profile import profile_dacs_steps, profile_tent_steps
    from pretrainlab.distributed import is_rank_zero
    from pretrainlab.engine.optim import build_optimizer, set_lr_and_weight_decay

    online = config.online
    batch_count = 2 + online.profile_steps + 1  # warm-up, measured, the accounting step
    dataset = copy.deepcopy(data.dataset)  # its augmentation rng advances with every sample: not the run's
    batches = [data.collate([dataset[(0, k * data.batch_size + i)] for i in range(data.batch_size)])
               for k in range(batch_count)]  # fmt: skip
    probe = copy.deepcopy(method)
    optim = online_optim(config)
    optimizer = build_optimizer(probe, optim)
    set_lr_and_weight_decay(optimizer, optim.lr, optim.weight_decay)
    tent = online.adaptation == "tent"
    rng_state = torch.get_rng_state()  # dropout and drop-path draw from it: the profile must not change the run
    with autocast(config.engine.precision, torch.device("cpu")):
        step = (profile_tent_steps if tent else profile_dacs_steps)(probe, batches, optimizer, warmup=2,
                                                                    steps=online.profile_steps)  # fmt: skip
        split = None if tent else backward_split(method, batches[0])
    torch.set_rng_state(rng_state)
    precision = resolve_precision(config.engine.precision, "cpu")
    text = step.markdown(f"{config.name}: one adaptation step ({precision})")
    record: dict[str, object] = {"step": step.to_dict()}
    result = {"peak_memory_mb": step.summary()["peak_memory_mb"], "profile_step_s": step.step_seconds}
    if split is not None:
        text += "\n" + split.markdown("Where the backward goes")
        record["backward"] = split.to_dict()
        configured = next((row for row in split.rows if row.is_configured), split.row("all"))
        result["backward_x_forward"] = configured.flops / max(split.forward_flops, 1)
    if is_rank_zero():
        adapt_dir.mkdir(parents=True, exist_ok=True)
        write_text(adapt_dir / "profile.md", text)
        write_text(adapt_dir / "profile.json", json.dumps(record, indent=2))
    log.info("profile of one step (adapt/profile.md):\n%s", text)
    return result


def report_detections(run: RunDir, config: Config) -> dict[str, Any]:
    """The detector's events so far against the true domain boundaries (`report/domain_changes.py`); the figure
    goes to plots/ (rank 0)."""
    from pretrainlab.distributed import is_rank_zero
    from pretrainlab.report.domain_changes import DETECTOR_PLOT, detection_summary, plot_detections, step_records

    records = step_records(run.adapt_dir / "metrics.jsonl")
    if is_rank_zero():
        plot_detections(records, run.plots / DETECTOR_PLOT, f"{config.name}: domain-shift detector")
    return detection_summary(records, config.online.detector.window)


def online_optim(config: Config) -> OptimConfig:
    """AdamW as DAFormer / HAMLET (head lr × `head_lr_multiplier`, no decay on norms and position blocks); TENT:
    Adam(W) with its lr and betas on the norm parameters, no multiplier. The lr itself is `constant_schedules`'."""
    from pretrainlab.engine.optim import OptimConfig

    online = config.online
    tent = online.adaptation == "tent"
    lr = online.tent.lr if tent else online.lr
    return OptimConfig(name="adamw", lr=lr, min_lr=lr, warmup_epochs=0.0,
                       weight_decay=online.weight_decay, weight_decay_end=online.weight_decay, clip_grad=None,
                       betas=online.tent.betas if tent else (0.9, 0.999), scale_lr_with_batch=False,
                       lr_multipliers={} if tent else {"student.head": online.head_lr_multiplier})  # fmt: skip


def evaluate_domains(config: Config, segmentor: Segmentor, layout: SegmentationLayout) -> dict[str, float]:
    """mIoU of `segmentor` on the validation split of every distinct domain, loading one dataset at a time."""
    from pretrainlab.eval.segmentation import evaluate_segmentor
    from pretrainlab.eval.segmentation_data import val_pipeline
    from pretrainlab.study.online import domain_dataset, domain_label

    scores = {}
    for domain in config.online.domains:
        dataset = domain_dataset(config, layout, domain, "val", val_pipeline(config))
        metric, _ = evaluate_segmentor(segmentor, dataset, config)
        scores[domain_label(domain)] = float(metric.summary()["mIoU"])
        del dataset
    return scores


def table_summary(run: RunDir, config: Config, row: dict[str, Any]) -> dict[str, Any]:
    """The domains × steps table of the finished phases plus `row`: written to eval/ and plots/, summarised."""
    from pretrainlab.distributed import is_rank_zero
    from pretrainlab.report.domain_table import DOMAINS_PLOT, DomainRow, DomainTable
    from pretrainlab.study.online import domain_label

    rows = [r for r in run.phase_results() if r["kind"] in ("source", "adapt") and r["label"] != row["label"]]
    table = DomainTable([domain_label(d) for d in config.online.domains],
                        [DomainRow(r["label"], r["trained_on"], r["miou"]) for r in [*rows, row]])  # fmt: skip
    if not is_rank_zero():  # the other processes of a multi-process run only train
        return table.summary()
    (run.eval_dir).mkdir(parents=True, exist_ok=True)
    write_text(run.eval_dir / "domains.csv", table.csv())
    write_text(run.eval_dir / "domains.md", table.markdown())
    table.plot(run.plots / DOMAINS_PLOT, f"{config.name}: mIoU per domain after each step")
    return table.summary()

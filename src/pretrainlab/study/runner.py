"""Run a study: its phases in order, each skipped when finished and rerun (resuming) when not,
then the summary (`summary.json`) and the report (`report.md`, plots) gathered from all phases.

Every process of a multi-process run walks the same phase list: phases that train run on all
of them; evaluations and every file write happen on rank 0 only. Each phase starts from the config's
seed (torch, numpy, Python), so what it computes does not depend on which earlier phases ran in this
process — a resumed study continues exactly as the uninterrupted one.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning as L

from pretrainlab.analysis.params import encoder_num_params
from pretrainlab.config.schema import Config
from pretrainlab.data.loaders import ensure_dataset
from pretrainlab.distributed import is_rank_zero
from pretrainlab.engine.malloc import keep_freed_memory
from pretrainlab.report.run_report import write_run_report
from pretrainlab.report.seg_curve import seg_curve
from pretrainlab.run_dir import RunDir
from pretrainlab.run_lock import hold_run_lock
from pretrainlab.study.phase import PHASES, StudyContext, run_phase
from pretrainlab.study.run import prepare_run_dir

log = logging.getLogger(__name__)


def run_study(config: Config) -> dict[str, Any]:
    """Run (or finish) the study `config` describes, holding its run's lock; returns its summary. A finished
    study is not recomputed.

    Raises:
        RunLockedError: another process is writing the run directory.
    """
    run = RunDir(config.run_dir)
    if run.has_summary():
        log.info("%s is finished (summary.json exists); not recomputing", run.path)
        return run.read_summary()
    started = time.perf_counter()
    keep_freed_memory()
    with hold_run_lock(run.path):
        prepare_run_dir(config, resume=True)
        if is_rank_zero():
            ensure_dataset(config)
        context = StudyContext(config, run)
        earlier_seconds = 0.0  # phases finished by an earlier, interrupted invocation
        for index, phase in enumerate(config.study.phases):
            place = run.phase(index, phase.name, phase.folder(config, index, lambda: context.epoch))
            if place.is_done():
                log.info("phase %s is finished; skipping", place.id)
                earlier_seconds += place.read_result().get("seconds", 0.0)
                continue
            if not phase.trains and not is_rank_zero():
                continue  # evaluations run on rank 0; the other processes go on to the next training phase
            log.info("phase %s", place.id)
            L.seed_everything(config.seed, workers=True, verbose=False)
            result = run_phase(phase, place, context)
            if is_rank_zero():
                place.write_result(result)
        if not is_rank_zero():
            return {}
        summary = study_summary(config, run, context, earlier_seconds + time.perf_counter() - started)
        write_run_report(run, summary)
        run.write_summary(summary)
    return summary


def study_summary(config: Config, run: RunDir, context: StudyContext, wall_time_s: float) -> dict[str, Any]:
    """Every phase's result; at the top level the keys of the last phase of each kind (`knn_top1`,
    `linear_top1`, `seg_miou`, ... as score tables read them), where a score by backbone takes each
    backbone's from the last phase that scored it (W4's loop scores the random init only at epoch 0),
    and the mIoU curve `seg_curve: [[epoch, mIoU], ...]`; `wall_time_s` counts this invocation and the
    phases earlier ones finished."""
    phases = run.phase_results()
    summary: dict[str, Any] = {
        "method": config.online.describe() if config.online is not None else config.method.name,
        "backbone": config.backbone.describe(),
        "epochs": context.epoch,
        "num_params": (encoder_num_params(context.method("pretrained"))
                       if run.checkpoint.is_file() or context.evaluates_checkpoint else None),
        "phases": phases,
    }
    for result in phases:
        for key in PHASES.get(result["kind"]).config.summary_keys:
            if key in result:
                summary[key] = _latest(summary.get(key), result[key])
    if curve := seg_curve(phases):
        summary["seg_curve"] = curve
    summary["pretrain_s"] = sum(r["seconds"] for r in phases if r["kind"] == "pretrain")
    summary["seg_s"] = sum(r["seconds"] for r in phases if r["kind"] == "seg") or None
    summary["wall_time_s"] = wall_time_s
    return summary


def _latest(earlier: Any, later: Any) -> Any:
    """`later`; for two mappings by backbone ({pretrained, random_init}) their union, `later`'s entries winning."""
    return {**earlier, **later} if isinstance(earlier, dict) and isinstance(later, dict) else later

"""Phase `seg`: segmentation finetuning (`eval.seg`, MMSeg semantics) of a copy of the pretrained and
of the random-init backbone on the engine, then evaluation -> seg.json, seg_random_init.json and
seg_examples.png in the phase folder. The run's own weights are never modified."""

from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pretrainlab.study.phase import PHASES, PhaseConfig, StudyContext

if TYPE_CHECKING:
    from pretrainlab.run_dir import Phase


class SegPhaseConfig(PhaseConfig):
    """Finetune a segmentation head (and the backbone in `full` mode) on `eval.seg`; score mIoU."""

    name: Literal["seg"]
    trains: ClassVar[bool] = True
    summary_keys: ClassVar[tuple[str, ...]] = ("seg_miou",)


@PHASES.register(SegPhaseConfig)
def run_seg_phase(phase: SegPhaseConfig, place: Phase, context: StudyContext) -> dict[str, Any]:
    from pretrainlab.eval.segmentation_run import evaluate_segmentation

    started = time.perf_counter()
    backbones = {name: copy.deepcopy(method.eval_backbone()) for name, method in context.methods().items()}
    sources = {"pretrained": f"{context.run.checkpoint} (epoch {context.epoch})", "random_init": "random"}
    results = evaluate_segmentation(context.config, backbones, sources, place.dir)
    return {
        "epoch": context.epoch,
        "seg_miou": {name: result["summary"]["mIoU"] for name, result in results.items()},
        "seg_examples": str((place.dir / "seg_examples.png").relative_to(context.run.path)),
        "seconds": time.perf_counter() - started,
    }

"""Phase `seg`: segmentation finetuning (`eval.seg`, MMSeg semantics) of a copy of the pretrained and
of the random-init backbone on the engine, then evaluation -> seg.json, seg_random_init.json and
seg_examples.png in the phase folder. The run's own weights are never modified.

`backbones` picks what is finetuned: a study that evaluates every K epochs scores the random init
once, as the curve's epoch-0 point (`backbones: [random_init]`, written to `eval/epoch_0/seg/`),
and only the pretrained weights afterwards (`backbones: [pretrained]`)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from pretrainlab.study.phase import PHASES, PhaseConfig, StudyContext

if TYPE_CHECKING:
    from pretrainlab.config.schema import Config
    from pretrainlab.run_dir import Phase

EvaluatedBackbone = Literal["pretrained", "random_init"]


class SegPhaseConfig(PhaseConfig):
    """Finetune a segmentation head (and the backbone in `full` mode) on `eval.seg`; score mIoU."""

    name: Literal["seg"]
    trains: ClassVar[bool] = True
    summary_keys: ClassVar[tuple[str, ...]] = ("seg_miou", "head_params", "step_time_s")
    backbones: list[EvaluatedBackbone] | None = Field(
        None, min_length=1, description="null: pretrained, and random_init with eval.random_init_baseline"
    )

    def evaluated(self, config: Config) -> list[EvaluatedBackbone]:
        if self.backbones is not None:
            return list(dict.fromkeys(self.backbones))
        return ["pretrained", *(["random_init"] if config.eval.random_init_baseline else [])]

    def evaluated_epoch(self, config: Config, index: int, checkpoint_epoch: Callable[[], int]) -> int:
        if self.evaluated(config) == ["random_init"]:
            return 0
        return super().evaluated_epoch(config, index, checkpoint_epoch)


@PHASES.register(SegPhaseConfig)
def run_seg_phase(phase: SegPhaseConfig, place: Phase, context: StudyContext) -> dict[str, Any]:
    from pretrainlab.eval.segmentation_run import evaluate_segmentation

    started = time.perf_counter()
    names = phase.evaluated(context.config)
    backbones = {name: copy.deepcopy(context.method(name).eval_backbone()) for name in names}
    sources = {name: context.source(name) for name in names}
    results = evaluate_segmentation(context.config, backbones, sources, place.dir)
    # the head and its step are the same for every backbone; the other ranks of a multi-process run have no results
    first = results[names[0]]["train"] if results else {}
    return {
        "epoch": 0 if names == ["random_init"] else context.epoch,
        "seg_miou": {name: result["summary"]["mIoU"] for name, result in results.items()},
        "head_params": first.get("head_params"),
        "step_time_s": first.get("step_time_s"),
        "seg_examples": str((place.dir / "seg_examples.png").relative_to(context.run.path)),
        "seconds": time.perf_counter() - started,
    }

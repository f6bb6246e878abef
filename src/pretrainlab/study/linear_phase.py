"""Phase `linear`: linear probe (`eval.linear`) on frozen, standardised pooled features of the
pretrained and the random-init backbone -> linear.json in the phase folder."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pretrainlab.study.phase import PHASES, PhaseConfig, StudyContext

if TYPE_CHECKING:
    from pretrainlab.run_dir import Phase


class LinearPhaseConfig(PhaseConfig):
    """Linear probe of the current pretrained state (and the random init), settings in `eval.linear`."""

    name: Literal["linear"]
    summary_keys: ClassVar[tuple[str, ...]] = ("linear_top1",)


@PHASES.register(LinearPhaseConfig)
def run_linear_phase(phase: LinearPhaseConfig, place: Phase, context: StudyContext) -> dict[str, Any]:
    from pretrainlab.eval.linear_probe import linear_probe_scores
    from pretrainlab.run_dir import write_json

    started = time.perf_counter()
    scores = {name: linear_probe_scores(f, context.config.eval.linear) for name, f in context.pooled_features().items()}
    write_json(place.dir / "linear.json", scores)
    return {
        "epoch": context.epoch,
        "linear_top1": {name: s["top1"] for name, s in scores.items()},
        "seconds": time.perf_counter() - started,
    }

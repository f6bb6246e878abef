"""Phase `pretrain`: train the run's method up to an epoch (default: `engine.max_epochs`).

The schedules always span `engine.max_epochs`, so `pretrain` to 5 then to 10 is the same run
as `pretrain` to 10; each phase continues `pretrain/checkpoints/last.ckpt` and records its result in
`pretrain/<NN>_to_epoch_<k>/`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from pretrainlab.study.phase import PHASES, PhaseConfig, StudyContext

if TYPE_CHECKING:
    from pretrainlab.config.schema import Config
    from pretrainlab.run_dir import Phase


class PretrainPhaseConfig(PhaseConfig):
    """Pretrain up to epoch `until_epoch` (null = `engine.max_epochs`)."""

    name: Literal["pretrain"]
    trains: ClassVar[bool] = True
    summary_keys: ClassVar[tuple[str, ...]] = ("epoch",)
    until_epoch: int | None = Field(None, ge=1)

    def target_epoch(self, config: Config) -> int:
        return self.until_epoch or config.engine.max_epochs

    def pretrains_to(self, config: Config) -> int:
        return self.target_epoch(config)

    def folder(self, config: Config, index: int, checkpoint_epoch: Callable[[], int]) -> str:
        return f"pretrain/{index:02d}_to_epoch_{self.target_epoch(config)}"

    def check(self, config: Config, key: str) -> None:
        if self.target_epoch(config) > config.engine.max_epochs:
            raise ValueError(f"{key}.until_epoch={self.until_epoch} exceeds engine.max_epochs={config.engine.max_epochs}")
        earlier = [epoch for p in config.study.phases[: int(key.rsplit(".", 1)[-1])]
                   if (epoch := p.pretrains_to(config)) is not None]  # fmt: skip
        if earlier and self.target_epoch(config) <= max(earlier):
            raise ValueError(f"{key}.until_epoch={self.target_epoch(config)} does not go past epoch {max(earlier)} "
                             "of an earlier pretrain phase")  # fmt: skip


@PHASES.register(PretrainPhaseConfig)
def run_pretrain_phase(phase: PretrainPhaseConfig, place: Phase, context: StudyContext) -> dict[str, Any]:
    from pretrainlab.study.run import pretrain

    started = time.perf_counter()
    pretrain(context.config, until_epoch=phase.target_epoch(context.config), resume=True)
    context.invalidate()
    return {"epoch": context.epoch, "seconds": time.perf_counter() - started}

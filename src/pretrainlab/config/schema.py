"""The typed config of a study: one section per concern, components chosen by `name`.

A YAML file holds only what differs from these defaults. Component sections (`backbone`,
`neck`, `method`, heads, losses on taps, study phases) are validated against the config
class their `name` selects in the component's registry (`pretrainlab/registry.py`), so
a misspelled name or key fails at load with the dotted path and the closest valid name
(see `config/loading.py`). The component classes live beside their builders; this
module only composes them.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

import pretrainlab.components  # noqa: F401  (registers the built-in components)
from pretrainlab.config.component import Strict
from pretrainlab.data.config import DataConfig
from pretrainlab.engine.optim import OptimConfig
from pretrainlab.engine.trainer import EngineConfig
from pretrainlab.eval.knn_eval import KNNConfig
from pretrainlab.eval.linear_probe import LinearProbeConfig
from pretrainlab.methods.base import METHODS, MethodConfig
from pretrainlab.methods.segmentation import SegFinetuneConfig
from pretrainlab.models.backbones.base import BACKBONES, BackboneConfig
from pretrainlab.models.necks.base import NECKS, NeckConfig
from pretrainlab.study.phase import PHASES, PhaseConfig


class EvalConfig(Strict):
    """Settings of the evaluations a study's phases run (`knn`, `linear`, `seg`)."""

    knn: KNNConfig = Field(default_factory=KNNConfig)
    linear: LinearProbeConfig = Field(default_factory=LinearProbeConfig)
    seg: SegFinetuneConfig = Field(default_factory=SegFinetuneConfig)
    random_init_baseline: bool = Field(True, description="every evaluation also scores the random-init backbone")


def default_phases() -> list[PhaseConfig]:
    return [PHASES.get("pretrain").config(), PHASES.get("knn").config()]


class StudyConfig(Strict):
    """What a study runs, in order: e.g. pretrain to epoch 5, knn, seg, pretrain to 10, knn, seg."""

    phases: list[PHASES.config_type()] = Field(default_factory=default_phases, min_length=1)  # type: ignore[valid-type]


class Config(Strict):
    """A whole study: what to pretrain, on what, how, and what to evaluate when."""

    name: str = Field("run", pattern=r"^[\w.\-]+$")
    output_root: Path = Path("runs")
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    backbone: BACKBONES.config_type("timm") = Field(default_factory=BACKBONES.default_factory("timm"))  # type: ignore[valid-type]
    neck: NECKS.config_type("none") = Field(default_factory=NECKS.default_factory("none"))  # type: ignore[valid-type]
    method: METHODS.config_type("dino") = Field(default_factory=METHODS.default_factory("dino"))  # type: ignore[valid-type]
    optim: OptimConfig = Field(default_factory=OptimConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    study: StudyConfig = Field(default_factory=StudyConfig)

    @model_validator(mode="after")
    def _check_consistency(self) -> Config:
        if self.optim.warmup_epochs > self.engine.max_epochs:
            raise ValueError(
                f"optim.warmup_epochs={self.optim.warmup_epochs} exceeds engine.max_epochs={self.engine.max_epochs}"
            )
        self.method.check(self)
        folders: dict[str, int] = {}
        for index, phase in enumerate(self.study.phases):
            phase.check(self, f"study.phases.{index}")
            folder = phase.folder(self, index, checkpoint_epoch=lambda: self.engine.max_epochs)
            if folder in folders:
                raise ValueError(f"study.phases.{index} ({phase.name}) would write into {folder} like "
                                 f"study.phases.{folders[folder]}: evaluate each epoch once")  # fmt: skip
            folders[folder] = index
        return self

    @property
    def run_dir(self) -> Path:
        return self.output_root / self.name

    @property
    def in_chans(self) -> int:
        """Channels the backbone takes: `backbone.in_chans`, else `data.channels`."""
        return self.backbone.in_chans or self.data.channels


__all__ = ["BackboneConfig", "Config", "EvalConfig", "MethodConfig", "NeckConfig", "StudyConfig"]

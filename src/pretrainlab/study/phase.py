"""A study is a list of phases; this module holds their registry and what they share.

A phase is a config class (registered in `PHASES` with its runner, in the phase's own
file) plus `run(phase, context) -> result`. A phase writes into its folder of the run
directory (`folder`: `pretrain/<NN>_to_epoch_<k>/` for pretraining, `eval/epoch_<k>/<kind>/`
for an evaluation of the weights after k epochs) and is finished when its `result.json`
exists: a finished phase is skipped, an interrupted one runs again (a pretraining phase
resumes from `pretrain/checkpoints/last.ckpt`). Evaluations score the run's pretrained
state at the epoch the pretraining phases before them reach and, with
`eval.random_init_baseline`, the random-init copy, whose pooled features are extracted
once per invocation and shared. A study with no pretraining phase that names a
`backbone.checkpoint` evaluates that checkpoint as its pretrained state (W5's head
benchmark over an exported backbone) and a truly random backbone as its random init.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pretrainlab.config.component import Component
from pretrainlab.registry import Registry

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from pretrainlab.config.schema import Config
    from pretrainlab.eval.pooled_features import PooledFeatures
    from pretrainlab.methods.base import Method
    from pretrainlab.run_dir import Phase, RunDir


class PhaseConfig(Component):
    """Base of every phase config."""

    trains: ClassVar[bool] = False  # every process of a multi-process run must take part
    summary_keys: ClassVar[tuple[str, ...]] = ()  # result keys the study summary takes from the last such phase

    def check(self, config: Config, key: str) -> None:
        """Raise ValueError naming `key` (e.g. `study.phases.2`) when this phase cannot run on `config`."""

    def folder(self, config: Config, index: int, checkpoint_epoch: Callable[[], int]) -> str:
        """Where phase `index` writes, relative to the run directory: `eval/epoch_<k>/<kind>` (an evaluation)."""
        return f"eval/epoch_{self.evaluated_epoch(config, index, checkpoint_epoch)}/{self.name}"

    def evaluated_epoch(self, config: Config, index: int, checkpoint_epoch: Callable[[], int]) -> int:
        """Pretraining epochs of the weights phase `index` evaluates: the target of the last pretraining
        phase before it, else those of the run's checkpoint (`checkpoint_epoch()`, read only then)."""
        reached = [epoch for phase in config.study.phases[:index] if (epoch := phase.pretrains_to(config)) is not None]
        return max(reached) if reached else checkpoint_epoch()

    def pretrains_to(self, config: Config) -> int | None:
        """The epoch a pretraining phase trains to (None for the other phases)."""
        return None


PHASES: Registry[PhaseConfig] = Registry("phase", PhaseConfig)


@dataclass
class StudyContext:
    """What the phases of one study share: the config, the run directory, and lazily loaded
    methods / loaders / pooled features (reloaded when a pretraining phase moved the weights)."""

    config: Config
    run: RunDir
    _methods: dict[str, Method] = field(default_factory=dict)
    _loaders: tuple[DataLoader, DataLoader] | None = None
    _features: dict[str, PooledFeatures] = field(default_factory=dict)
    _epoch: int | None = None

    def invalidate(self) -> None:
        """Forget the pretrained method and its features (the checkpoint changed)."""
        self._methods.pop("pretrained", None)
        self._features.pop("pretrained", None)
        self._epoch = None

    @property
    def epoch(self) -> int:
        """Epochs of pretraining in `pretrain/checkpoints/last.ckpt` (0 before any)."""
        if self._epoch is None:
            self._epoch = self.run.checkpoint_epoch()
        return self._epoch

    @property
    def evaluates_checkpoint(self) -> bool:
        """True when the study brings its pretrained weights in `backbone.checkpoint` instead of pretraining."""
        pretrains = any(phase.pretrains_to(self.config) is not None for phase in self.config.study.phases)
        return not pretrains and self.config.backbone.checkpoint is not None

    def source(self, name: str) -> str:
        """Where the evaluated backbone `name` comes from, for the result files."""
        if name == "random_init":
            return "random"
        if self.evaluates_checkpoint:
            return str(self.config.backbone.checkpoint)
        return f"{self.run.checkpoint} (epoch {self.epoch})"

    def method(self, name: str) -> Method:
        """`pretrained` (the weights of last.ckpt, or `backbone.checkpoint` in a study that does not pretrain) or
        `random_init` (exactly as pretraining started; without `backbone.checkpoint` in such a study)."""
        from pretrainlab.study.run import load_pretrained_method, random_init_method

        if name not in self._methods:
            if name == "pretrained" and self.evaluates_checkpoint:
                self._methods[name] = random_init_method(self.config)  # built, then the checkpoint loaded
            elif name == "pretrained":
                self._methods[name] = load_pretrained_method(self.run.path)[1]
            elif name == "random_init" and self.evaluates_checkpoint:
                backbone = self.config.backbone.model_copy(update={"checkpoint": None})
                self._methods[name] = random_init_method(self.config.model_copy(update={"backbone": backbone}))
            elif name == "random_init":
                self._methods[name] = random_init_method(self.config)
            else:
                raise ValueError(f"unknown evaluated backbone {name!r}; expected 'pretrained' or 'random_init'")
        return self._methods[name]

    def methods(self) -> dict[str, Method]:
        """`pretrained` and, with `eval.random_init_baseline`, `random_init`."""
        names = ["pretrained", *(["random_init"] if self.config.eval.random_init_baseline else [])]
        return {name: self.method(name) for name in names}

    def eval_loaders(self) -> tuple[DataLoader, DataLoader]:
        from pretrainlab.data.loaders import build_eval_loaders

        if self._loaders is None:
            self._loaders = build_eval_loaders(self.config)
        return self._loaders

    def pooled_features(self) -> dict[str, PooledFeatures]:
        """Pooled features of every method's eval backbone, extracted once and shared by kNN, linear, t-SNE."""
        from pretrainlab.eval.pooled_features import extract_pooled_features

        train_loader, val_loader = self.eval_loaders()
        methods = self.methods()
        for name, method in methods.items():
            if name not in self._features:
                self._features[name] = extract_pooled_features(method.eval_backbone(), train_loader, val_loader)
        return {name: self._features[name] for name in methods}


def run_phase(phase: PhaseConfig, place: Phase, context: StudyContext) -> dict[str, Any]:
    """Run `phase` (its registered runner) and return its result."""
    return PHASES.build(phase, place, context)

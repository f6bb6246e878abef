"""The `search:` section of a sweep file: what `pretrainlab search` samples with Optuna.

    search:
      params:                                      # dotted config key -> a range or a list of choices
        optim.lr: {low: 1.0e-4, high: 1.0e-2, log: true}     # float, log-uniform
        data.batch_size: {low: 16, high: 64, step: 16}        # int (low, high, step all integers): 16, 32, 48, 64
        method.temperature: {choices: [0.1, 0.2, 0.5]}        # numbers, strings, booleans or null
      objectives: [knn_top1, num_params]           # score-table keys; default: [the sweep's metric]
      direction: [maximize, minimize]              # default per objective: scores maximize, params / time minimize
      population_size: 8                           # NSGA-II's generation size (default 50)

Two objectives make the search multi-objective (NSGA-II's home ground; TPE and random sampling
handle it too). The grid sampler takes every combination of the choices and of the ranges'
`low, low + step, ..., high`; a range without `step` has no grid and is refused. Whether a key
exists and takes the values is checked against the config schema when the sweep file is
expanded (`config/sweeps.py`), before anything runs.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

from pydantic import Field, field_validator, model_validator

from pretrainlab.config.component import Strict
from pretrainlab.config.loading import ConfigError
from pretrainlab.report.scores import COLUMN_BY_KEY, check_metric

Sampler = Literal["tpe", "nsga2", "random", "grid"]
SAMPLERS: tuple[str, ...] = get_args(Sampler)
Direction = Literal["maximize", "minimize"]
Choice = bool | int | float | str | None


class SearchParam(Strict):
    """One searched key: a range `{low, high, log?, step?}` or `{choices: [...]}`."""

    low: int | float | None = Field(None, description="smallest value of a range")
    high: int | float | None = Field(None, description="largest value of a range")
    log: bool = Field(False, description="sample the range log-uniformly (low > 0)")
    step: int | float | None = Field(None, gt=0, description="range values low, low + step, ..., high")
    choices: list[Choice] | None = Field(None, description="the values to choose from")

    @model_validator(mode="after")
    def _range_or_choices(self) -> SearchParam:
        is_range = any(value is not None for value in (self.low, self.high, self.step)) or self.log
        if self.choices is not None:
            if is_range:
                raise ValueError("give either a range {low, high, log, step} or {choices}, not both")
            if not self.choices:
                raise ValueError("choices is empty")
            if len({repr(choice) for choice in self.choices}) < len(self.choices):
                raise ValueError(f"choices {self.choices} repeat a value")
            return self
        if self.low is None or self.high is None:
            raise ValueError("expected a range {low, high, log?, step?} or {choices: [...]}")
        if self.low > self.high:
            raise ValueError(f"low {self.low} > high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0 (got {self.low})")
        if self.log and self.step is not None:
            raise ValueError("a range is either log or stepped, not both")
        return self

    @property
    def is_int(self) -> bool:
        """A range of integers: low, high (and step) are all written as integers."""
        bounds = [value for value in (self.low, self.high, self.step) if value is not None]
        return self.choices is None and all(isinstance(value, int) and not isinstance(value, bool) for value in bounds)

    def grid(self) -> list[Choice] | None:
        """Every value the grid sampler tries: the choices, or the stepped range; None for a continuous range."""
        if self.choices is not None:
            return list(self.choices)
        if self.step is None:
            return None
        assert self.low is not None and self.high is not None
        count = math.floor((self.high - self.low) / self.step + 1e-9) + 1
        values = [self.low + index * self.step for index in range(count)]
        return values if self.is_int else [round(value, 12) for value in values]  # 0.1 + 2 * 0.1 -> 0.3

    def extremes(self) -> list[Choice]:
        """The values that represent this parameter when its key is checked against the schema."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]


class SearchSection(Strict):
    """The typed `search:` section: searched keys, objectives and their directions."""

    params: dict[str, SearchParam] = Field(min_length=1, description="dotted config key -> range or choices")
    objectives: list[str] | None = Field(
        None, min_length=1, max_length=2, description="score-table keys to optimise; default: the sweep's metric"
    )
    direction: Direction | list[Direction] | None = Field(
        None, description="per objective; default: scores maximize, num_params / wall_time_s minimize"
    )
    population_size: int = Field(50, ge=2, description="NSGA-II: trials per generation")

    @field_validator("params")
    @classmethod
    def _dotted_keys(cls, params: dict[str, SearchParam]) -> dict[str, SearchParam]:
        for key in params:
            if not all(key.split(".")):
                raise ValueError(f"empty key in '{key}'")
        return params

    @field_validator("objectives")
    @classmethod
    def _known_objectives(cls, objectives: list[str] | None) -> list[str] | None:
        for metric in objectives or []:
            check_metric(metric)
        if objectives is not None and len(set(objectives)) < len(objectives):
            raise ValueError(f"objectives {objectives} repeat a metric")
        return objectives

    @model_validator(mode="after")
    def _one_direction_per_objective(self) -> SearchSection:
        if isinstance(self.direction, list):
            count = len(self.objectives or [None])
            if len(self.direction) != count:
                raise ValueError(f"direction lists {len(self.direction)} directions for {count} objective(s)")
        elif self.direction is not None and len(self.objectives or [None]) > 1:
            raise ValueError("direction: give one direction per objective, e.g. [maximize, minimize]")
        return self

    def resolved_objectives(self, metric: str) -> list[tuple[str, Direction]]:
        """[(metric, direction)]: `objectives` (default `[metric]`) with the given or the metric's direction."""
        metrics = self.objectives or [metric]
        given = self.direction if isinstance(self.direction, list) else [self.direction] * len(metrics)
        return [(key, direction or default_direction(key)) for key, direction in zip(metrics, given)]

    def grid(self, source: str) -> dict[str, list[Choice]]:
        """{key: values} for the grid sampler; ConfigError naming `source` and the key of a range without step."""
        grid = {}
        for key, param in self.params.items():
            values = param.grid()
            if values is None:
                raise ConfigError(f"{source}: search key '{key}': the grid sampler needs `choices` or a `step`")
            grid[key] = values
        return grid

    def grid_size(self, source: str) -> int:
        return math.prod(len(values) for values in self.grid(source).values())


def default_direction(metric: str) -> Direction:
    """Scores (percentages) are maximised; counts (parameters) and seconds minimised."""
    return "maximize" if COLUMN_BY_KEY[metric].kind == "score" else "minimize"

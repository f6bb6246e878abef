"""Sweep files: a base config plus named variants, each a set of dotted overrides.

    study: w1_ablations              # runs go to <output_root>/<study>/<variant>/
    base: base.yaml                  # relative to this file; may itself `extends`
    metric: knn_top1                 # score-table column to sort by (report/scores.py)
    overrides: {eval.linear.enabled: true}   # applied to every variant
    variants:
      no_neck: {model.neck.name: none}
      dappm:   {model.neck.name: dappm}
    presets:                         # chosen with --preset; applied to every variant
      small: {engine.max_epochs: 2, data.synthetic.num_train: 5000}
    search:                          # optional, for `pretrainlab search` (config/search_space.py);
      params: {optim.lr: {low: 1.0e-4, high: 1.0e-2, log: true}}   # `variants` may then be left out

Each variant's config is built as base -> sweep overrides -> variant overrides -> preset
overrides -> command-line overrides, then `name` is set to the variant and `output_root` to
`<output_root>/<study>`. Every variant is validated before anything runs; errors name
the sweep file, the variant and the dotted key. A `search` section's keys are checked the same way,
each with its extreme values (low and high, every choice) in place of a variant's overrides.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from pretrainlab.config.loading import (
    ConfigError,
    apply_override,
    format_validation_error,
    given_keys,
    read_yaml_mapping,
    read_yaml_with_extends,
    set_dotted,
)
from pretrainlab.config.schema import Config, Strict
from pretrainlab.config.search_space import SearchSection
from pretrainlab.registry import did_you_mean
from pretrainlab.report.scores import check_metric

NAME_PATTERN = r"^[\w.\-]+$"
SET_BY_SWEEP = ("name", "output_root")
Overrides = dict[str, Any]


class SweepFile(Strict):
    """The typed content of a sweep file."""

    study: str = Field(pattern=NAME_PATTERN, description="folder under output_root holding the variants")
    base: Path = Field(description="base config, relative to the sweep file")
    metric: str = Field("knn_top1", description="score-table column to sort by")
    overrides: Overrides = Field(default_factory=dict, description="{dotted.key: value} for every variant")
    variants: dict[str, Overrides] = Field(
        default_factory=dict, description="variant name -> {dotted.key: value}; may be empty with `search`"
    )
    presets: dict[str, Overrides] = Field(default_factory=dict, description="preset name -> {dotted.key: value}")
    search: SearchSection | None = Field(None, description="what `pretrainlab search` samples (search_space.py)")

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, metric: str) -> str:
        return check_metric(metric)

    @field_validator("variants", "presets")
    @classmethod
    def _plain_names_and_keys(cls, entries: dict[str, Overrides]) -> dict[str, Overrides]:
        for name, overrides in entries.items():
            if not _is_plain_name(name):
                raise ValueError(f"'{name}' must be a folder name (letters, digits, '_', '.', '-')")
            _check_not_set_by_sweep(overrides, f"'{name}'")
        return entries

    @field_validator("overrides")
    @classmethod
    def _keys_not_set_by_sweep(cls, overrides: Overrides) -> Overrides:
        return _check_not_set_by_sweep(overrides, "overrides")

    @field_validator("search")
    @classmethod
    def _search_keys_not_set_by_sweep(cls, search: SearchSection | None) -> SearchSection | None:
        if search is not None:
            _check_not_set_by_sweep(search.params, "search")
        return search

    @model_validator(mode="after")
    def _variants_or_search(self) -> SweepFile:
        if not self.variants and self.search is None:
            raise ValueError("a sweep file needs `variants` (or a `search` section for `pretrainlab search`)")
        return self


def _check_not_set_by_sweep(overrides: Overrides, owner: str) -> Overrides:
    for dotted in overrides:
        if dotted in SET_BY_SWEEP:
            raise ValueError(f"{owner} sets '{dotted}', which the sweep sets (study / variant name)")
    return overrides


@dataclass(frozen=True)
class Sweep:
    """An expanded sweep: its file, the study folder and one validated config per variant; what a search
    trial's config is built from (`trial_config`)."""

    path: Path
    file: SweepFile
    study_dir: Path
    configs: dict[str, Config]
    base: dict[str, Any] = field(default_factory=dict)  # the base config file's data, before any override
    preset_overrides: Overrides = field(default_factory=dict)
    cli_overrides: list[str] = field(default_factory=list)

    def trial_config(self, name: str, values: Overrides, source: str | None = None) -> Config:
        """A search trial's config, in `study_dir / name`: base -> sweep overrides -> preset -> `values` (the
        sampled ones) -> command-line overrides. Raises ConfigError naming the sweep file and `source` (default:
        the trial)."""
        override_sets = [self.file.overrides, self.preset_overrides, values]
        source = source or f"{self.path}: trial '{name}'"
        return _variant_config(self.base, name, self.file.study, override_sets, self.cli_overrides, source)


def _is_plain_name(name: str) -> bool:
    return re.fullmatch(NAME_PATTERN, name) is not None


def load_sweep_file(path: Path) -> SweepFile:
    data = read_yaml_mapping(path, "sweep file")
    try:
        return SweepFile.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, data, str(path), SweepFile)) from None


def expand_sweep(
    path: Path | str, *, preset: str | None = None, overrides: list[str] | None = None, study: str | None = None
) -> Sweep:
    """Read a sweep file and validate the config of every variant (nothing runs, no data is read).

    Args:
        path: the sweep file.
        preset: name of one of the file's presets, applied to every variant.
        overrides: command-line `dotted.key=value` overrides, applied last to every variant.
        study: replaces the file's `study` (the folder the variants go to).

    Raises:
        ConfigError: listing every problem of every variant, one line each.
    """
    path = Path(path)
    sweep = load_sweep_file(path)
    if study is not None:
        if not _is_plain_name(study):
            raise ConfigError(f"study '{study}' must be a folder name (letters, digits, '_', '.', '-')")
        sweep = sweep.model_copy(update={"study": study})
    preset_overrides = _preset(sweep, preset, path)
    if not (path.parent / sweep.base).is_file():
        raise ConfigError(f"{path}: base {sweep.base}: {path.parent / sweep.base} not found")
    base = read_yaml_with_extends(path.parent / sweep.base)
    configs: dict[str, Config] = {}
    problems: list[str] = []
    for variant, variant_overrides in sweep.variants.items():
        source = f"{path}: variant '{variant}'"
        try:
            configs[variant] = _variant_config(
                base,
                variant,
                sweep.study,
                [sweep.overrides, variant_overrides, preset_overrides],
                overrides or [],
                source,
            )
        except ConfigError as error:
            problems += [line for line in str(error).splitlines() if line not in problems]
    expanded = Sweep(path, sweep, Path(), configs, base, preset_overrides, list(overrides or []))  # study_dir below
    search_configs = _check_search(expanded, problems) if sweep.search is not None else []
    if problems:
        raise ConfigError("\n".join(problems))
    study_dirs = {config.output_root for config in [*configs.values(), *search_configs]}
    assert len(study_dirs) == 1, f"variants resolve to different study folders: {study_dirs}"
    return dataclasses.replace(expanded, study_dir=study_dirs.pop())


def _check_search(sweep: Sweep, problems: list[str]) -> list[Config]:
    """Build a config with each searched key at each of its extreme values; append what fails to `problems`
    (one line each, naming the sweep file and the key) and return the configs that validate."""
    assert sweep.file.search is not None
    configs = []
    overridden: dict[str, Any] = {}
    for override in sweep.cli_overrides:
        apply_override(overridden, override)
    for key, param in sweep.file.search.params.items():
        if _has_dotted(overridden, key):
            problems.append(f"{sweep.path}: search key '{key}' is also set on the command line, which would "
                            f"replace every sampled value")  # fmt: skip
        for value in param.extremes():
            try:
                configs.append(sweep.trial_config("trial", {key: value}, f"{sweep.path}: search key '{key}'"))
            except ConfigError as error:
                problems += [line for line in str(error).splitlines() if line not in problems]
    return configs


def _has_dotted(data: dict[str, Any], dotted: str) -> bool:
    node: Any = data
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def _preset(sweep: SweepFile, preset: str | None, path: Path) -> Overrides:
    if preset is None:
        return {}
    if preset not in sweep.presets:
        known = sorted(sweep.presets)
        raise ConfigError(
            f"{path}: unknown preset '{preset}'{did_you_mean(preset, known)} known: {', '.join(known) or '(none)'}"
        )
    return sweep.presets[preset]


def _variant_config(
    base: dict[str, Any],
    variant: str,
    study: str,
    override_sets: list[Overrides],
    cli_overrides: list[str],
    source: str,
) -> Config:
    data = copy.deepcopy(base)
    for override_set in override_sets:
        given = frozenset(override_set)
        for dotted, value in override_set.items():
            set_dotted(data, dotted, copy.deepcopy(value), context=f"{source}: key '{dotted}'", given=given)
    given_on_command_line = given_keys(cli_overrides)
    for override in cli_overrides:
        apply_override(data, override, given=given_on_command_line)
    output_root = Path(data.get("output_root", Config.model_fields["output_root"].default))
    data["name"] = variant
    data["output_root"] = str(output_root / study)
    try:
        return Config.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, data, source)) from None

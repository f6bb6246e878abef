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

Each variant's config is built as base -> sweep overrides -> variant overrides -> preset
overrides -> command-line overrides, then `name` is set to the variant and `output_root` to
`<output_root>/<study>`. Every variant is validated before anything runs; errors name
the sweep file, the variant and the dotted key.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator

from pretrainlab.config.loading import (
    ConfigError,
    apply_override,
    format_validation_error,
    read_yaml_mapping,
    read_yaml_with_extends,
    set_dotted,
)
from pretrainlab.config.schema import Config, Strict
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
    variants: dict[str, Overrides] = Field(min_length=1, description="variant name -> {dotted.key: value}")
    presets: dict[str, Overrides] = Field(default_factory=dict, description="preset name -> {dotted.key: value}")

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


def _check_not_set_by_sweep(overrides: Overrides, owner: str) -> Overrides:
    for dotted in overrides:
        if dotted in SET_BY_SWEEP:
            raise ValueError(f"{owner} sets '{dotted}', which the sweep sets (study / variant name)")
    return overrides


@dataclass(frozen=True)
class Sweep:
    """An expanded sweep: its file, the study folder and one validated config per variant."""

    path: Path
    file: SweepFile
    study_dir: Path
    configs: dict[str, Config]


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
    if problems:
        raise ConfigError("\n".join(problems))
    study_dirs = {config.output_root for config in configs.values()}
    assert len(study_dirs) == 1, f"variants resolve to different study folders: {study_dirs}"
    return Sweep(path=path, file=sweep, study_dir=study_dirs.pop(), configs=configs)


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
        for dotted, value in override_set.items():
            set_dotted(data, dotted, copy.deepcopy(value), context=f"{source}: key '{dotted}'")
    for override in cli_overrides:
        apply_override(data, override)
    output_root = Path(data.get("output_root", Config.model_fields["output_root"].default))
    data["name"] = variant
    data["output_root"] = str(output_root / study)
    try:
        return Config.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, data, source)) from None

"""Bad configs, fuzzed: hypothesis mutates the shipped configs (configs/**/*.yaml) and the command line, and
the real CLI entry (`pretrainlab.cli.main`, in-process) must refuse every bad one with exit status 2 and
one clear line on stderr naming the file and the dotted key — never a traceback.

A mutated config that is still valid must load: the study runner is replaced by a stub, so an accepted
config exits 0 without training. The mutations that are invalid by construction (an unknown key, a value
of a type the field cannot take, a size below its minimum, a non-finite number) must be refused.
"""

from __future__ import annotations

import functools
import math
import re
import shutil
import subprocess
import sys
import types
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any
from unittest import mock

import pytest
import yaml
from conftest import tiny_run_overrides
from corpus_cli import FUZZ, CliResult, error_lines, one_error_line, run_cli
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import BaseModel

from pretrainlab.config import load_config

pytestmark = pytest.mark.usefixtures("with_quickstart_export")  # W5's configs load the quickstart's export

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIGS = REPO_ROOT / "configs"
Place = tuple[str | int, ...]  # where a setting is in a config: keys, and list positions as numbers

# Numeric leaves that are sizes or counts: a negative one is an error everywhere.
SIZE_NAME = re.compile(r"(size|scale|epoch|iter|steps|num_|dim|depth|width|heads|workers|buffer|batches|max_|min_|"
                       r"window|every|rank|bottleneck|stride|crop|layers|channels|chans|ks$|k$)")  # fmt: skip
# ... and those where 0 means "off" or "none" (every other size must be at least 1).
ZERO_ALLOWED = {"every_n_epochs", "num_local", "num_workers", "warmup_iters", "num_examples",
                "freeze_last_layer_epochs", "warmup_teacher_temp_epochs", "num_detection_train", "num_detection_val",
                "profile_steps", "skip_nonfinite_steps", "min_pixels"}  # fmt: skip


def _data(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def _is_sweep(data: dict[str, Any]) -> bool:
    return "variants" in data or "search" in data


@functools.cache
def seed_files() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(plain configs, sweep files) of configs/, relative to it."""
    files = sorted(path.relative_to(CONFIGS).as_posix() for path in CONFIGS.rglob("*.yaml"))
    sweeps = tuple(name for name in files if _is_sweep(_data(CONFIGS / name)))
    return tuple(name for name in files if name not in sweeps), sweeps


@dataclass(frozen=True)
class Leaf:
    """A setting of a seed config: where it is, the annotation of its field, and its validated value."""

    seed: str
    path: Place
    annotation: Any
    value: Any

    @property
    def dotted(self) -> str:
        return ".".join(map(str, self.path))


def _models(model: BaseModel, path: Place = ()) -> Iterator[tuple[Place, BaseModel]]:
    """Every config section below `model` (itself included) with its path; list entries by position."""
    yield path, model
    for name in type(model).model_fields:
        value = getattr(model, name)
        items = enumerate(value) if isinstance(value, list) else [(None, value)]
        for position, item in items:
            if isinstance(item, BaseModel):
                yield from _models(item, (*path, name) if position is None else (*path, name, position))


def _settable(data: Any, path: Place) -> bool:
    """Whether `path` can be written into the YAML data: every list on the way is there (a missing mapping is
    created; a list the validation generated, like a study's phases, is not in the file)."""
    node = data
    for part in path:
        if isinstance(part, int):
            if not (isinstance(node, list) and part < len(node)):
                return False
            node = node[part]
        elif node is None or isinstance(node, dict):
            node = node.get(part) if isinstance(node, dict) else None
        else:
            return False
    return True


def _set(data: dict[str, Any], path: Place, value: Any) -> None:
    node: Any = data
    for part in path[:-1]:
        node = node[part] if isinstance(part, int) else node.setdefault(part, {})
    node[path[-1]] = value


@functools.cache
def sections(seed: str) -> tuple[tuple[Place, frozenset[str]], ...]:
    """The config sections of a plain seed config that its YAML can hold a key in, with their field names."""
    data, config = _data(CONFIGS / seed), load_config(CONFIGS / seed)
    return tuple((path, frozenset(type(model).model_fields)) for path, model in _models(config)
                 if _settable(data, path))  # fmt: skip


@functools.cache
def leaves(seed: str) -> tuple[Leaf, ...]:
    """The settings of a plain seed config (every field of every section, nested sections left out)."""
    data, config = _data(CONFIGS / seed), load_config(CONFIGS / seed)
    found = []
    for path, model in _models(config):
        for name, field in type(model).model_fields.items():
            value = getattr(model, name)
            is_section = isinstance(value, BaseModel) or (isinstance(value, list) and value
                                                          and isinstance(value[0], BaseModel))  # fmt: skip
            if not is_section and _settable(data, (*path, name)):
                found.append(Leaf(seed, (*path, name), field.annotation, value))
    return tuple(found)


def _kinds(annotation: Any) -> set[str]:
    """What a field annotation accepts, coarsely: bool, int, float, str, path, sequence, mapping, none, any,
    and `literal:<value>` per literal value."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        is_registry = any(hasattr(meta, "registry") for meta in args[1:])  # a component chosen by `name`
        return {"mapping"} if is_registry else _kinds(args[0])
    if origin in (typing.Union, types.UnionType):
        return set().union(*(_kinds(arg) for arg in args))
    if origin is typing.Literal:
        return {f"literal:{value!r}" for value in args}
    if origin in (list, tuple, set, frozenset) or annotation in (list, tuple):
        return {"sequence"}
    if origin is dict or annotation is dict:
        return {"mapping"}
    if annotation is type(None):
        return {"none"}
    if annotation in (bool, int, float, str):
        return {annotation.__name__}
    if isinstance(annotation, type) and issubclass(annotation, PurePath):
        return {"path"}
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {"mapping"}
    return {"any"}


WORDS_A_FIELD_MAY_PARSE = {"true", "false", "none", "null", "nan", "inf", "infinity", "yes", "on", "off"}


def wrong_values(leaf: Leaf) -> st.SearchStrategy[Any]:
    """Values the field of `leaf` cannot take whatever its validators do: a mapping for a scalar, a word for a
    number, a number for a string, ... (nothing when the field takes anything)."""
    kinds = _kinds(leaf.annotation)
    if "any" in kinds:
        return st.nothing()
    literals = {kind.removeprefix("literal:") for kind in kinds if kind.startswith("literal:")}
    options = []
    if "mapping" not in kinds:
        options.append(st.just({"unexpected": [1, 2]}))
    if not kinds & {"str", "path"}:
        words = st.from_regex(r"[a-z]{4,10}", fullmatch=True)
        options.append(words.filter(lambda w: w not in WORDS_A_FIELD_MAY_PARSE and repr(w) not in literals))
    if "sequence" not in kinds:
        options.append(st.just([[1, 2], "x"]))
    if "float" not in kinds:
        options.append(st.just(0.5))
    if not kinds & {"int", "float"} and "7" not in literals:
        options.append(st.just(7))
    return st.one_of(options) if options else st.nothing()


@pytest.fixture(scope="module")
def config_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of configs/ (sweep files name their base relative to themselves)."""
    return Path(shutil.copytree(CONFIGS, tmp_path_factory.mktemp("corpus") / "configs"))


def write_mutant(config_copy: Path, seed: str, content: dict[str, Any] | str) -> Path:
    """The mutated `seed` beside it in the copy of configs/, as YAML data or as text."""
    path = config_copy / Path(seed).with_name(f"mutant_{Path(seed).name}")
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
    return path


def run_config(path: Path, *overrides: str) -> CliResult:
    """`pretrainlab study PATH OVERRIDES...` in-process; a config that loads exits 0 without running."""
    with mock.patch("pretrainlab.study.runner.run_study", return_value={}):
        return run_cli(["study", str(path), *overrides])


def run_sweep(path: Path, *arguments: str, seed: Path | None = None) -> CliResult:
    """`pretrainlab sweep|search PATH --dry-run ARGUMENTS...` (search for a file with only a `search` section,
    judged by `seed`, default `path`): validates every variant, runs nothing."""
    seed_data = _data(seed or path)
    verb = "search" if "search" in seed_data and "variants" not in seed_data else "sweep"
    return run_cli([verb, str(path), "--dry-run", *arguments])


def assert_loads_or_clear_error(result: CliResult, path: Path | str) -> None:
    """Exit 0 (the config loaded), or exit 2 with lines that each name the config (or the override)."""
    if result.status == 0:
        return
    for line in error_lines(result):
        assert str(path) in line or "override" in line, f"a line that names neither the file nor the override: {line!r}"


def plain_seeds() -> st.SearchStrategy[str]:
    return st.sampled_from(seed_files()[0])


# --- configs mutated by key and value -------------------------------------------------------------------------


@FUZZ
@given(data=st.data())
def test_unknown_key_in_any_section_is_refused_with_the_known_keys(config_copy: Path, data: st.DataObject) -> None:
    seed = data.draw(plain_seeds(), "seed")
    path, fields = data.draw(st.sampled_from(sections(seed)), "section")
    long_fields = sorted(field for field in fields if len(field) >= 5)
    keys = [st.from_regex(r"[a-z][a-z0-9_\[\]-]{0,14}", fullmatch=True)]  # brackets: not taken for a union's type
    if long_fields:  # a typo: the last letter doubled
        keys.append(st.sampled_from(long_fields).map(lambda field: field + field[-1]))
    key = data.draw(st.one_of(keys), "key")
    assume(key not in fields and key != "extends")
    content = _data(CONFIGS / seed)
    _set(content, (*path, key), data.draw(st.one_of(st.integers(), st.text(max_size=8), st.none()), "value"))
    mutant = write_mutant(config_copy, seed, content)
    dotted = ".".join(map(str, (*path, key)))
    line = one_error_line(run_config(mutant), str(mutant), f"{dotted}: unknown key", " known: ")
    if any(key == field + field[-1] for field in long_fields):
        assert "did you mean '" in line, line


@FUZZ
@given(data=st.data())
def test_value_of_a_wrong_type_is_refused_naming_the_key(config_copy: Path, data: st.DataObject) -> None:
    seed = data.draw(plain_seeds(), "seed")
    leaf = data.draw(st.sampled_from(leaves(seed)), "leaf")
    value = data.draw(wrong_values(leaf), "value")
    content = _data(CONFIGS / seed)
    _set(content, leaf.path, value)
    mutant = write_mutant(config_copy, seed, content)
    one_error_line(run_config(mutant), str(mutant), f"{leaf.dotted}")


def _is_size(leaf: Leaf) -> bool:
    """An integer size or count (or a list of them, like backbone.channels), by its name."""
    name, kinds, value = str(leaf.path[-1]), _kinds(leaf.annotation), leaf.value
    is_int = kinds & {"int"} and not kinds & {"float", "bool"}
    is_int_list = isinstance(value, (list, tuple)) and value and all(type(item) is int for item in value)
    return bool(is_int or is_int_list) and SIZE_NAME.search(name) is not None \
        and "seed" not in name  # fmt: skip


def _size_leaves() -> list[Leaf]:
    return [leaf for seed in seed_files()[0] for leaf in leaves(seed) if _is_size(leaf)]


@FUZZ
@given(data=st.data())
def test_negative_or_zero_sizes_are_refused(config_copy: Path, data: st.DataObject) -> None:
    leaf = data.draw(st.sampled_from(_size_leaves()), "leaf")
    allows_zero = leaf.path[-1] in ZERO_ALLOWED
    value = data.draw(st.integers(max_value=-1) if allows_zero else st.integers(max_value=0), "value")
    is_sequence = "sequence" in _kinds(leaf.annotation) and isinstance(leaf.value, (list, tuple)) and leaf.value
    content = _data(CONFIGS / leaf.seed)
    if is_sequence:  # e.g. backbone.channels, eval.seg.scale: one entry below the minimum
        position = data.draw(st.integers(0, len(leaf.value) - 1), "position")
        _set(content, leaf.path, [value if i == position else v for i, v in enumerate(leaf.value)])
    else:
        _set(content, leaf.path, value)
    mutant = write_mutant(config_copy, leaf.seed, content)
    one_error_line(run_config(mutant), str(mutant), leaf.dotted)


def _is_float(leaf: Leaf) -> bool:
    """A number that may be fractional (or a list of them, like optim.betas)."""
    value = leaf.value
    is_float_list = isinstance(value, (list, tuple)) and value and all(type(item) is float for item in value)
    return bool("float" in _kinds(leaf.annotation) or is_float_list)


def _float_leaves() -> list[Leaf]:
    return [leaf for seed in seed_files()[0] for leaf in leaves(seed) if _is_float(leaf)]


@FUZZ
@given(data=st.data())
def test_non_finite_numbers_are_refused(config_copy: Path, data: st.DataObject) -> None:
    leaf = data.draw(st.sampled_from(_float_leaves()), "leaf")
    value = data.draw(st.sampled_from([math.nan, math.inf, -math.inf]), "value")
    content = _data(CONFIGS / leaf.seed)
    is_sequence = isinstance(leaf.value, (list, tuple)) and leaf.value
    _set(content, leaf.path, [value, *leaf.value[1:]] if is_sequence else value)  # a list: its first entry
    mutant = write_mutant(config_copy, leaf.seed, content)
    one_error_line(run_config(mutant), str(mutant), leaf.dotted)


@pytest.mark.parametrize("override", ["engine.devices=0", "engine.devices=-2", "engine.devices=abc",
                                      "engine.limit_train_batches=-3", "engine.limit_train_batches=0",
                                      "engine.limit_train_batches=1.5"])  # fmt: skip
def test_engine_settings_lightning_rejects_are_refused_at_load(override: str) -> None:
    one_error_line(run_config(CONFIGS / "quickstart.yaml", override), override.split("=")[0])


# --- broken YAML and command lines ----------------------------------------------------------------------------

YAML_BREAKERS = ["[", "]", "{", "}", '"', "'", ": ", "- ", "\t", "&", "*", "!", "%", "@", "`", "|", ">", "#"]


@FUZZ
@given(data=st.data())
def test_broken_yaml_text_loads_or_is_refused_in_one_line(config_copy: Path, data: st.DataObject) -> None:
    seed = data.draw(st.sampled_from([*seed_files()[0], *seed_files()[1]]), "seed")
    text = (CONFIGS / seed).read_text()
    position = data.draw(st.integers(0, len(text)), "position")
    kind = data.draw(st.sampled_from(["cut", "insert", "delete"]), "kind")
    if kind == "cut":  # a file saved half-way
        text = text[:position]
    elif kind == "insert":  # an unbalanced bracket or quote, a tab, a stray anchor
        text = text[:position] + data.draw(st.sampled_from(YAML_BREAKERS), "inserted") + text[position:]
    else:
        text = text[:position] + text[position + 1 :]
    mutant = write_mutant(config_copy, seed, text)
    result = run_sweep(mutant, seed=CONFIGS / seed) if seed in seed_files()[1] else run_config(mutant)
    assert_loads_or_clear_error(result, mutant)
    if "invalid YAML" in result.stderr:
        assert len(error_lines(result)) == 1, result.stderr


OVERRIDE_KEYS = ["engine.max_epochs", "optim.lr", "data.batch_size", "eval.knn.ks", "backbone", "method.name",
                 "study.phases", "a..b", "", ".", "engine.", "nope.deeper", "data.root"]  # fmt: skip
OVERRIDE_VALUES = ["abc", "[10, 20", "{a: 1", "-3", "0", "null", "", "'", ".nan", "1e-3", "[[]]", "{name: dinoo}"]


@FUZZ
@given(
    key=st.one_of(st.sampled_from(OVERRIDE_KEYS), st.from_regex(r"[a-z_.]{0,20}", fullmatch=True)),
    value=st.one_of(st.sampled_from(OVERRIDE_VALUES), st.text(st.characters(exclude_categories=("Cc", "Cs")),
                                                              max_size=12)),  # fmt: skip
    has_equals=st.booleans(),
)
def test_fuzzed_dotted_overrides_load_or_are_refused_in_one_line(key: str, value: str, has_equals: bool) -> None:
    override = f"{key}={value}" if has_equals else key + value
    assume(not override.startswith("-"))  # argparse's own options
    result = run_config(CONFIGS / "quickstart.yaml", override)
    assert_loads_or_clear_error(result, CONFIGS / "quickstart.yaml")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["a..b=1"], "override 'a..b=1': empty key in 'a..b'"),
        (["=3"], "override '=3': empty key in ''"),
        (["optim.lr"], "override 'optim.lr': expected dotted.key=value"),
        (["engine.max_epochs=abc"], "engine.max_epochs: Input should be a valid integer"),
        (["enigne.max_epochs=3"], "enigne: unknown key; did you mean 'engine'?"),
        (["engine.max_epoch=3"], "engine.max_epoch: unknown key; did you mean 'max_epochs'?"),
        (["eval.knn.ks=[10, 20"], "value is not valid YAML: line 1, column 8: expected ',' or ']'"),
        (["method.views={scale: [0.2, 1.0}"], "value is not valid YAML: line 1, column"),
        (["engine=3", "engine.max_epochs=2"], "override 'engine.max_epochs=2': 'engine' is 3, not a mapping"),
        (["backbone.name=timmm"], "backbone.name: unknown backbone 'timmm'; did you mean 'timm'?"),
        (["backbone=3"], "backbone: expected a mapping with a `name` (backbone)"),
        (["method.views.scale=[0.9, 0.1]"], "method.views.scale: expected (low, high) with low <= high"),
        (["data.intensity_window=[5, 1]"], "intensity_window=(5, 1) is only used with uint16_scaling 'window'"),
        (["seed=-1"], "seed: Input should be greater than or equal to 0"),
        (["optim.lr=.nan"], "optim.lr: Input should be a finite number (got nan)"),
        (["engine.limit_train_batches=abc"], "engine.limit_train_batches: Input should be a valid integer, unable "
                                             "to parse string as an integer or Input should be a valid number"),
        (["study.phases=[]"], "study.phases: List should have at least 1 item"),
        (["study.phases=[{name: pretrian}]"], "study.phases.0.name: unknown phase 'pretrian'; did you mean"),
        (["m[ethod.losses=[]"], "m[ethod: unknown key; did you mean 'method'?"),
        (["study.phases=[{name: pretrain, untill_epoch: 2}]"],
         "study.phases.0.untill_epoch: unknown key; did you mean 'until_epoch'? known: name, until_epoch"),
    ],
)
def test_bad_dotted_overrides(overrides: list[str], expected: str) -> None:
    one_error_line(run_config(CONFIGS / "quickstart.yaml", *overrides), expected)


# --- sweeps, presets and missing files ------------------------------------------------------------------------


def _sweep_with(config_copy: Path, seed: str, change: typing.Callable[[dict[str, Any]], None]) -> Path:
    content = _data(CONFIGS / seed)
    change(content)
    return write_mutant(config_copy, seed, content)


@FUZZ
@given(data=st.data())
def test_bad_variant_key_names_the_sweep_the_variant_and_the_key(config_copy: Path, data: st.DataObject) -> None:
    seed = data.draw(st.sampled_from([s for s in seed_files()[1] if "variants" in _data(CONFIGS / s)]), "seed")
    variant = data.draw(st.sampled_from(sorted(_data(CONFIGS / seed)["variants"])), "variant")
    section = data.draw(st.sampled_from(["engine", "optim", "data", "eval.knn", "method", "backbone"]), "section")
    key = data.draw(st.from_regex(r"zz[a-z_]{1,10}", fullmatch=True), "key")  # no field starts with zz
    mutant = _sweep_with(config_copy, seed, lambda c: c["variants"][variant].update({f"{section}.{key}": 1}))
    one_error_line(run_sweep(mutant), str(mutant), f"variant '{variant}'", f"{section}.{key}: unknown key")


@FUZZ
@given(preset=st.from_regex(r"[a-z]{1,8}", fullmatch=True))
def test_unknown_preset_names_the_known_ones(preset: str) -> None:
    sweep = CONFIGS / "w1_sebnet" / "ablations.yaml"
    assume(preset not in _data(sweep)["presets"])
    one_error_line(run_sweep(sweep, "--preset", preset), f"unknown preset '{preset}'", "known: medium, small")


@pytest.mark.parametrize(
    ("change", "arguments", "expected"),
    [
        (lambda c: c.pop("variants"), [], "a sweep file needs `variants`"),
        (lambda c: c.update(variants={}), [], "a sweep file needs `variants`"),
        (lambda c: c.update(variants=None), [], "variants: Input should be a valid dictionary (got None)"),
        (lambda c: c["variants"].update(no_neck=3), [], "variants.no_neck: Input should be a valid dictionary"),
        (lambda c: c.update(base="missing.yaml"), [], "base missing.yaml: "),
        (lambda c: c.update(study="a/b"), [], "study: String should match pattern"),
        (lambda c: c.update(metirc="knn_top1"), [], "metirc: unknown key; did you mean 'metric'?"),
        (lambda c: c["presets"]["small"].update({"engine.max_epocs": 2}), ["--preset", "small"],
         "engine.max_epocs: unknown key; did you mean 'max_epochs'?"),
        (lambda c: c["presets"].update(small=[1]), ["--preset", "small"], "presets.small: Input should be a valid "
                                                                          "dictionary"),
    ],
)
def test_bad_sweep_files(config_copy: Path, change: typing.Callable[[dict[str, Any]], None], arguments: list[str],
                         expected: str) -> None:  # fmt: skip
    mutant = _sweep_with(config_copy, "w1_sebnet/ablations.yaml", change)
    lines = error_lines(run_sweep(mutant, *arguments))
    assert any(expected in line and str(mutant) in line for line in lines), lines


def test_search_file_run_as_a_sweep_is_an_empty_sweep() -> None:
    result = run_cli(["sweep", str(CONFIGS / "w2_uda" / "search.yaml"), "--dry-run"])
    one_error_line(result, "search.yaml has no variants; run its `search:` section with `pretrainlab search`")


def test_missing_files_are_named(config_copy: Path, tmp_path: Path) -> None:
    one_error_line(run_config(tmp_path / "nope.yaml"), f"config file {tmp_path / 'nope.yaml'} not found")
    child = write_mutant(config_copy, "quickstart.yaml", "extends: missing_base.yaml\nname: child\n")
    one_error_line(run_config(child), f"{child}: extends missing_base.yaml: ", "missing_base.yaml not found")
    one_error_line(run_config(CONFIGS / "quickstart.yaml", f"backbone.checkpoint={tmp_path / 'gone.pt'}"),
                   "backbone.checkpoint: Path does not point to a file", "gone.pt")  # fmt: skip
    one_error_line(run_config(CONFIGS / "w4_mae" / "study.yaml", f"method.stack={tmp_path / 'mae.pth'}"),
                   "method.stack: checkpoint", "mae.pth does not exist")  # fmt: skip
    one_error_line(run_config(CONFIGS / "w2_uda" / "rain_sequence.yaml", f"online.source_checkpoint={tmp_path}/s.pt"),
                   "online.source_checkpoint: Path does not point to a file")  # fmt: skip
    one_error_line(run_config(CONFIGS / "quickstart.yaml", "backbone.checkpoint=runs/gone.pt"),
                   "backbone.checkpoint: Path does not point to a file; a relative path is read from the working "
                   f"directory {Path.cwd()}", "runs/gone.pt")  # fmt: skip


def test_missing_data_root_is_named_before_anything_trains(tmp_path: Path) -> None:
    result = run_cli(["study", str(CONFIGS / "quickstart.yaml"), f"data.root={tmp_path / 'no_data'}",
                      "data.synthetic=null", f"output_root={tmp_path / 'runs'}"])  # fmt: skip
    one_error_line(result, f"data.root={tmp_path / 'no_data'}: train data", "classification/train", "not found")


@pytest.mark.parametrize("verb", [["evaluate", "knn"], ["evaluate", "linear"], ["export"], ["analyze", "embeddings"]])
def test_a_missing_run_directory_is_named(verb: list[str], tmp_path: Path) -> None:
    extra = ["--out", str(tmp_path / "backbone.pt")] if verb == ["export"] else []
    result = run_cli([*verb, "--run", str(tmp_path / "no_run"), *extra])
    one_error_line(result, f"{tmp_path / 'no_run'} is not a run directory: ", "config.yaml not found")


def test_backbone_from_a_missing_file_is_named(tiny_synthetic: Path, tmp_path: Path) -> None:
    result = run_cli(["evaluate", "seg", str(CONFIGS / "quickstart.yaml"), "--backbone-from", str(tmp_path / "x.pt"),
                      *tiny_run_overrides(tiny_synthetic, tmp_path / "runs")])  # fmt: skip
    one_error_line(result, f"--backbone-from {tmp_path / 'x.pt'}: not a run directory, a checkpoint file or 'random'")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- a\n- b\n", "expected a mapping at the top level, got list"),
        ("engine: {max_epochs: 3\n", "invalid YAML: line 2, column 1: expected ',' or '}'"),
        ("name: 'unterminated\n", "invalid YAML: line 2, column 1: found unexpected end of stream"),
        ("engine:\n\tmax_epochs: 3\n", "invalid YAML: line 2, column 1: found character '\\t'"),
        ("a: *nothing\n", "invalid YAML: line 1, column 4: found undefined alias 'nothing'"),
    ],
)
def test_broken_config_files_are_one_line(config_copy: Path, text: str, expected: str) -> None:
    mutant = write_mutant(config_copy, "quickstart.yaml", text)
    one_error_line(run_config(mutant), f"{mutant}: {expected}" if "top level" not in expected else expected)


def test_a_binary_config_file_is_named(config_copy: Path) -> None:
    mutant = config_copy / "binary.yaml"
    mutant.write_bytes(b"name: \xff\xfe\x00\x01")
    one_error_line(run_config(mutant), f"{mutant}: not a UTF-8 text file")


# --- the installed command, in its own process ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["study", str(CONFIGS / "quickstart.yaml"), "engine.max_epocs=3"], "did you mean 'max_epochs'?"),
        (["study", str(CONFIGS / "quickstart.yaml"), "eval.knn.ks=[10, 20"], "value is not valid YAML"),
        (["sweep", str(CONFIGS / "w3_ssl" / "compare.yaml"), "--dry-run", "--preset", "big"], "unknown preset 'big'"),
    ],
)
def test_the_command_exits_2_with_one_line_in_a_subprocess(arguments: Sequence[str], expected: str) -> None:
    completed = subprocess.run([sys.executable, "-m", "pretrainlab.cli", *arguments], capture_output=True,
                               text=True, timeout=300, cwd=REPO_ROOT)  # fmt: skip
    line = one_error_line(CliResult(completed.returncode, completed.stdout, completed.stderr), expected)
    assert line.startswith("error: ")

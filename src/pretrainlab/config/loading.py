"""Load YAML configs: single explicit inheritance, dotted overrides, one-line errors.

    extends: base.yaml        # path relative to this file; deep-merged, this file wins
    method: {teacher_temp: 0.07}

Overrides from the command line are `dotted.key=value`, the value parsed as YAML.
Every problem raises `ConfigError` whose message names the file, the dotted key and
what was expected, with a did-you-mean for misspelled keys and component names.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from pretrainlab.config.schema import Config
from pretrainlab.registry import UNKNOWN_COMPONENT, did_you_mean


class ConfigError(ValueError):
    """A config that cannot be loaded; the message is meant to be shown as is."""


def load_config(path: Path | str | None = None, overrides: list[str] | None = None) -> Config:
    """Read `path` (following `extends`), apply `overrides`, validate into a `Config`."""
    source = str(path) if path is not None else "<defaults>"
    data = read_yaml_with_extends(Path(path)) if path is not None else {}
    given = given_keys(overrides or [])
    for override in overrides or []:
        apply_override(data, override, given=given)
    if overrides:
        source += " + overrides"
    return validate_config(data, source)


def validate_config(data: dict[str, Any], source: str = "<config>") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, data, source)) from None



def read_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    """The YAML mapping in `path`; a missing file, invalid YAML or a non-mapping is a ConfigError naming it."""
    if not path.is_file():
        raise ConfigError(f"{what} {path} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not a UTF-8 text file ({error.reason} at byte {error.start})") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML: {yaml_problem(error)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def yaml_problem(error: yaml.YAMLError) -> str:
    """PyYAML's report in one line: `line L, column C: problem (while context)`; its own spans several lines."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        context = f" ({error.context})" if error.context else ""
        return f"line {mark.line + 1}, column {mark.column + 1}: {error.problem}{context}"
    return " ".join(str(error).split())


def read_yaml_with_extends(path: Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in _chain:
        raise ConfigError(f"{path}: 'extends' cycle: {' -> '.join(str(p) for p in (*_chain, path))}")
    data = read_yaml_mapping(path, "config file")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: 'extends' must be one file path, got {parent!r}")
    if not (path.parent / parent).is_file():
        raise ConfigError(f"{path}: extends {parent}: {path.parent / parent} not found")
    base = read_yaml_with_extends(path.parent / parent, (*_chain, path))
    return {**base, **{key: deep_merge(base.get(key), value) for key, value in data.items()}}


def deep_merge(old: Any, new: Any) -> Any:
    """Merge `new` into a copy of `old`, recursively for mappings.

    A mapping whose `name` changes is a different component, so it replaces the old one
    instead of inheriting its keys (`backbone: {name: sebnet}` over a timm backbone).
    """
    if isinstance(old, dict) and isinstance(new, dict) and new.get("name", old.get("name")) == old.get("name"):
        return {**old, **{key: deep_merge(old.get(key), value) for key, value in new.items()}}
    return new


def given_keys(overrides: Iterable[str]) -> frozenset[str]:
    """The dotted keys a list of `a.b.c=value` overrides sets."""
    return frozenset(override.split("=", 1)[0].strip() for override in overrides)


def apply_override(data: dict[str, Any], override: str, *, given: Collection[str] = ()) -> None:
    """Apply `a.b.c=value` in place; the value is parsed as YAML (`1e-3`, `[10, 20]`, `null`). `given`: the
    dotted keys set by the whole list of overrides this one belongs to (see `set_dotted`)."""
    if "=" not in override:
        raise ConfigError(f"override '{override}': expected dotted.key=value")
    dotted, raw_value = override.split("=", 1)
    keys = dotted.strip().split(".")
    if not all(keys):
        raise ConfigError(f"override '{override}': empty key in '{dotted}'")
    try:
        value = yaml.safe_load(raw_value)
    except yaml.YAMLError as error:
        raise ConfigError(f"override '{override}': value is not valid YAML: {yaml_problem(error)}") from None
    set_dotted(data, dotted.strip(), value, context=f"override '{override}'", given=given)


def set_dotted(
    data: dict[str, Any], dotted: str, value: Any, *, context: str, given: Collection[str] = ()
) -> None:
    """Merge an already-parsed `value` at `a.b.c` in place; `context` prefixes error messages.

    Setting a registered component's `name` to another component (`eval.seg.head.name=uper`) drops the
    options the new one does not have, as `deep_merge` does for a whole mapping — except those the same
    list of overrides sets (`given`, dotted keys), before or after the switch: these stay and are checked.
    """
    keys = dotted.split(".")
    if not all(keys):
        raise ConfigError(f"{context}: empty key in '{dotted}'")
    node = data
    for i, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{context}: '{'.'.join(keys[: i + 1])}' is {child!r}, not a mapping")
        node = child
    if len(keys) > 1 and keys[-1] == "name" and node.get("name", value) != value:
        before = _known_fields(Config, keys[:-1], data)
        node["name"] = value
        after = _known_fields(Config, keys[:-1], data)
        parent = ".".join(keys[:-1])
        if before and after and before != after:  # another registered component: drop what it does not know
            for option in [option for option in node if option not in after and f"{parent}.{option}" not in given]:
                del node[option]
    node[keys[-1]] = deep_merge(node.get(keys[-1]), value)


def format_validation_error(
    error: ValidationError, data: dict[str, Any], source: str, model: type[BaseModel] = Config
) -> str:
    """One line per problem: `source: dotted.key: what is wrong (what was expected)`; `model` was validated.

    A value no member of a union field accepts (`engine.limit_train_batches: int | float | None`) is one
    problem: pydantic's error per member becomes one line at the field, its messages joined by "or".
    """
    problems: dict[object, tuple[str, list[str], str]] = {}  # one entry per problem: (key prefix, messages, got)
    for index, item in enumerate(error.errors()):
        union_at = _union_member_at(item["loc"], data)
        loc = list(item["loc"][:union_at])  # a union's member errors: at the union field
        dotted = ".".join(str(part) for part in loc) or "<top level>"
        kind = item["type"]
        got = f" (got {item.get('input')!r})"
        if kind == "extra_forbidden":
            known = _known_fields(model, loc[:-1], data)
            message, got = f"unknown key{did_you_mean(str(loc[-1]), known)} known: {', '.join(known)}", ""
        elif kind == UNKNOWN_COMPONENT:
            dotted, message, got = f"{dotted}.name", item["msg"], ""
        elif kind == "value_error" and isinstance(item.get("input"), dict):
            message, got = str(item["ctx"]["error"]), ""  # a validator of a whole section: its message names the keys
        elif kind == "value_error":
            message = str(item["ctx"]["error"])  # a field's validator: its message without pydantic's "Value error, "
        elif kind in ("path_not_file", "path_not_directory") and not Path(str(item.get("input"))).is_absolute():
            message = f"{item['msg']}; a relative path is read from the working directory {Path.cwd()}"
        else:
            message = item["msg"]
        is_whole_config = not loc and kind == "value_error"  # Config's own checks name their keys
        key = index if union_at is None else dotted  # the members of a union: one problem
        problems.setdefault(key, ("" if is_whole_config else f"{dotted}: ", [], got))[1].append(message)
    return "\n".join(f"{source}: {prefix}{' or '.join(dict.fromkeys(messages))}{got}"
                     for prefix, messages, got in problems.values())  # fmt: skip


_TYPE_NAMES = {"int", "float", "str", "bool", "bytes", "none"}


def _union_member_at(loc: tuple[int | str, ...], data: Any) -> int | None:
    """Position in `loc` of the first element naming a member of a union (`int`, `literal['half','full']`)
    where the data has no such key or position; None when there is none."""
    node = data
    for position, part in enumerate(loc):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            is_type = isinstance(part, str) and (part in _TYPE_NAMES or "[" in part)
            return position if is_type else None
    return None


def _known_fields(model: type[BaseModel], loc: list[Any], data: Any) -> list[str]:
    """Field names of the config class found by walking `loc` from `model` (following the data's `name`)."""
    current: Any = model
    node = data
    for part in loc:
        container = typing.get_origin(current)
        if container in (list, dict):  # an entry of a list or a mapping: its item type
            is_entry = isinstance(node, list) and isinstance(part, int) and part < len(node)
            node = node[part] if is_entry or (isinstance(node, dict) and part in node) else None
            current = _model_in(typing.get_args(current)[-1], node)
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(str(part))
        if field is None:
            return []
        node = node.get(part) if isinstance(node, dict) else None
        current = _model_in(field.rebuild_annotation(), node)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(current.model_fields)
    return []


def _model_in(annotation: Any, node: Any) -> Any:
    """The config class `annotation` stands for: through Optional / Annotated, and for a registry
    field (`Registry.config_type`) the class the node's `name` selects."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        args = typing.get_args(annotation)
        chooser = next((meta for meta in args[1:] if hasattr(meta, "registry")), None)
        if chooser is not None:
            name = node.get("name", chooser.default) if isinstance(node, dict) else chooser.default
            return chooser.registry.get(name).config if name in chooser.registry else None
        return _model_in(args[0], node)
    if origin in (typing.Union, types.UnionType):
        members = [_model_in(arg, node) for arg in typing.get_args(annotation)]
        walkable = [m for m in members  # a config class, or a list / mapping of them (`study.phases`)
                    if (isinstance(m, type) and issubclass(m, BaseModel)) or typing.get_origin(m) in (list, dict)]
        return walkable[0] if walkable else None
    return annotation


def dump_config(config: Config) -> str:
    """The resolved config as YAML (what is written beside every run)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)

"""Base classes of every config section, and of every component chosen by `name`.

A component config declares its name once, as `name: Literal["sebnet"]`; a mapping
without `name` (or a bare `SEBNetConfig()`) gets it filled in, and its registry
(`pretrainlab/registry.py`) reads it from there.
"""

from __future__ import annotations

import typing
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator


class Strict(BaseModel):
    """Base of every config class: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Component(Strict):
    """A config chosen by its `name` from a registry; subclasses declare `name: Literal["<name>"]`."""

    registry_kind: ClassVar[str] = "component"

    @model_validator(mode="before")
    @classmethod
    def _fill_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and "name" not in data and "name" in cls.model_fields:
            return {"name": cls.component_name(), **data}
        return data

    @classmethod
    def component_name(cls) -> str:
        """The single value of this class's `name: Literal[...]` field."""
        field = cls.model_fields.get("name")
        args = typing.get_args(field.annotation) if field is not None else ()
        if typing.get_origin(field.annotation if field else None) is not typing.Literal or len(args) != 1:
            raise TypeError(f"{cls.__name__} must declare its name as `name: Literal['<name>']`")
        return str(args[0])

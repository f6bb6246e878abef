"""Base classes of every config section, and of every component chosen by `name`.

A component config declares its name once, as `name: Literal["sebnet"]`; a mapping
without `name` (or a bare `SEBNetConfig()`) gets it filled in, and its registry
(`pretrainlab/registry.py`) reads it from there.

Numbers are finite (`.nan` / `.inf` are refused at load), and the value types shared by several
sections are checked where they are declared: `Probability` (0..1), `FractionRange` (a crop's area
range, 0 <= low <= high <= 1) and `PositiveInt` (a size or a count).
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PositiveInt, model_validator

__all__ = ["Component", "FractionRange", "PositiveInt", "Probability", "Strict"]


def _ordered(pair: tuple[float, float]) -> tuple[float, float]:
    if pair[0] > pair[1]:
        raise ValueError("expected (low, high) with low <= high")
    return pair


Probability = Annotated[float, Field(ge=0.0, le=1.0)]
FractionRange = Annotated[tuple[Probability, Probability], AfterValidator(_ordered)]


class Strict(BaseModel):
    """Base of every config class: unknown keys are errors, numbers are finite, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


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

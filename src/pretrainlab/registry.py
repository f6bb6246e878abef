"""Registries of the components users name in configs (backbones, necks, heads, losses on
taps, methods, study phases).

A component is a typed config class and a builder, registered together in the
component's own file:

    class SEBNetConfig(Component):
        name: Literal["sebnet"]
        size: Literal["s", "m", "l"] = "s"

    @BACKBONES.register(SEBNetConfig)
    def build_sebnet(config: SEBNetConfig, in_chans: int) -> SEBNet: ...

A config field typed `BACKBONES.config_type()` accepts a mapping whose `name` is any
registered component (now or later: a file registering a component after this module
was imported is seen at the next validation) and validates it against that component's
config class; an unknown name fails at load with the known names and a did-you-mean.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, GetCoreSchemaHandler
from pydantic_core import PydanticCustomError, core_schema

from pretrainlab.config.component import Component

C = TypeVar("C", bound=Component)
Builder = TypeVar("Builder", bound=Callable[..., Any])
UNKNOWN_COMPONENT = "unknown_component"


def did_you_mean(name: str, known: list[str]) -> str:
    """Return "; did you mean 'x'?" for the closest known name, or "" when none is close."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


@dataclass(frozen=True)
class Entry(Generic[C]):
    """One registered component: its config class and its builder."""

    config: type[C]
    build: Callable[..., Any]


class Registry(Generic[C]):
    """Maps component names to (config class, builder). `kind` names the family in errors."""

    def __init__(self, kind: str, base: type[C]) -> None:
        self.kind = kind
        self.base = base
        self._entries: dict[str, Entry[C]] = {}

    def register(self, config: type[C]) -> Callable[[Builder], Builder]:
        """Decorator registering `builder` for `config` (a subclass of the family's base config)."""
        if not (isinstance(config, type) and issubclass(config, self.base)):
            raise TypeError(f"{self.kind} config {config!r} must subclass {self.base.__name__}")
        name = config.component_name()

        def decorator(builder: Builder) -> Builder:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = Entry(config, builder)
            return builder

        return decorator

    def get(self, name: str) -> Entry[C]:
        if name not in self._entries:
            raise KeyError(self.unknown_message(name))
        return self._entries[name]

    def build(self, config: C, *args: Any, **kwargs: Any) -> Any:
        """Call the builder registered for `config.name` with the config and the other arguments."""
        return self.get(config.name).build(config, *args, **kwargs)

    def unknown_message(self, name: str) -> str:
        known = self.names()
        return f"unknown {self.kind} '{name}'{did_you_mean(name, known)} known: {', '.join(known)}"

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def config_type(self, default: str | None = None) -> Any:
        """A pydantic field type: the config of any registered component, chosen by `name`
        (`default` when the mapping has no `name`)."""
        return Annotated[self.base, _ByName(self, default)]

    def default_factory(self, name: str) -> Callable[[], C]:
        """`Field(default_factory=...)` building the default config of component `name`."""
        return lambda: self.get(name).config()


class _ByName:
    """pydantic hook: validate a mapping with the config class its `name` selects in a registry."""

    def __init__(self, registry: Registry, default: str | None) -> None:
        self.registry = registry
        self.default = default

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            self.validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda value, info: value.model_dump(mode=info.mode), info_arg=True
            ),
        )

    def validate(self, value: Any) -> Component:
        if isinstance(value, BaseModel):
            value = value.model_dump()
        if not isinstance(value, dict):
            raise PydanticCustomError(
                "component_mapping", "expected a mapping with a `name` ({kind}), got {got}",
                {"kind": self.registry.kind, "got": repr(value)},
            )  # fmt: skip
        name = value.get("name", self.default)
        if name is None:
            raise PydanticCustomError(
                UNKNOWN_COMPONENT, "missing {kind} `name`; known: {known}",
                {"kind": self.registry.kind, "known": ", ".join(self.registry.names())},
            )  # fmt: skip
        if not isinstance(name, str) or name not in self.registry:
            raise PydanticCustomError(UNKNOWN_COMPONENT, "{message}", {"message": self.registry.unknown_message(str(name))})
        return self.registry.get(name).config.model_validate(value)

"""Typed configuration: schema, loading with `extends` and dotted overrides.

`Config`, `ConfigError`, `dump_config` and `load_config` are imported on first use, so a
component file can import `pretrainlab.config.component` without loading the schema
(which imports every component).
"""

from typing import Any

__all__ = ["Config", "ConfigError", "dump_config", "load_config"]


def __getattr__(name: str) -> Any:
    if name == "Config":
        from pretrainlab.config.schema import Config

        return Config
    if name in ("ConfigError", "dump_config", "load_config"):
        from pretrainlab.config import loading

        return getattr(loading, name)
    raise AttributeError(f"module 'pretrainlab.config' has no attribute '{name}'")

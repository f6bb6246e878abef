"""Typed configuration: schema, loading with `extends` and dotted overrides."""

from pretrainlab.config.loading import ConfigError, dump_config, load_config
from pretrainlab.config.schema import Config

__all__ = ["Config", "ConfigError", "dump_config", "load_config"]

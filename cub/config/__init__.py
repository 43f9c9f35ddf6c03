"""Configuration: typed schema (``schema``) and layered loading (``load``)."""

from __future__ import annotations

from cub.config.load import (
    LoadedConfig,
    config_to_dict,
    default_config_dict,
    load_config,
    user_config_path,
)
from cub.config.schema import Config, Duration

__all__ = [
    "Config",
    "Duration",
    "LoadedConfig",
    "config_to_dict",
    "default_config_dict",
    "load_config",
    "user_config_path",
]

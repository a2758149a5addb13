"""Typed run config: schema, TOML io with migrations, presets. Imports neither torch nor textual."""

from tui_trainer.config.errors import ConfigError, ConfigProblem
from tui_trainer.config.io import (
    check_paths,
    config_from_dict,
    config_to_dict,
    dump_config,
    load_config,
    parse_config,
    resolve_path,
    save_config,
    validate_file,
    with_absolute_paths,
)
from tui_trainer.config.presets import load_preset, preset_names, preset_text
from tui_trainer.config.schema import CONFIG_VERSION, TrainConfig, parse_resolution

__all__ = [
    "CONFIG_VERSION",
    "ConfigError",
    "ConfigProblem",
    "TrainConfig",
    "check_paths",
    "config_from_dict",
    "config_to_dict",
    "dump_config",
    "load_config",
    "load_preset",
    "parse_config",
    "parse_resolution",
    "preset_names",
    "preset_text",
    "resolve_path",
    "save_config",
    "validate_file",
    "with_absolute_paths",
]

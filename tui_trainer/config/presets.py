"""Presets: one TOML file per family x method, in the top-level presets/ folder, shipped as the package data of
`tui_trainer.presets` (setup.py maps that package to the folder, in the wheel and in an editable install)."""

from __future__ import annotations

from importlib import resources

from tui_trainer.config.errors import ConfigError, ConfigProblem
from tui_trainer.config.io import parse_config
from tui_trainer.config.schema import TrainConfig

PRESETS_PACKAGE = "tui_trainer.presets"


def preset_names() -> list[str]:
    """Names of the shipped presets, sorted."""
    folder = resources.files(PRESETS_PACKAGE)
    return sorted(entry.name.removesuffix(".toml") for entry in folder.iterdir() if entry.name.endswith(".toml"))


def preset_text(name: str) -> str:
    """The TOML text (with its comments) of a preset."""
    if name not in preset_names():
        allowed = ", ".join(preset_names())
        raise ConfigError([ConfigProblem("", "", f"unknown preset {name!r}; allowed: {allowed}")])
    return resources.files(PRESETS_PACKAGE).joinpath(f"{name}.toml").read_text(encoding="utf-8")


def load_preset(name: str) -> TrainConfig:
    """A preset as a validated config."""
    return parse_config(preset_text(name), f"preset {name}")

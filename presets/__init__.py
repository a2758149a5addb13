"""The presets (one TOML file per family x method): the package data of tui_trainer.presets (see setup.py)."""

"""Ships the top-level presets/ folder as the package tui_trainer.presets (pyproject.toml cannot map one
subpackage to another folder beside a package search); everything else is in pyproject.toml."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["tui_trainer*"]), "tui_trainer.presets"],
    package_dir={"tui_trainer.presets": "presets"},
)

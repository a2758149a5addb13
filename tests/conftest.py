"""Shared fixtures: tiny models are built once per test session and reused."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory):
    """Factory: path of a saved tiny pipeline of a given kind (sd15, sd2, sdxl, sd15-inpaint), built once."""
    from tui_trainer.devkit.tiny_models import save_tiny_pipeline

    root = tmp_path_factory.mktemp("tiny-models")
    built: dict[str, Path] = {}

    def get(kind: str = "sd15") -> Path:
        if kind not in built:
            built[kind] = save_tiny_pipeline(root / kind, kind)
        return built[kind]

    return get


@pytest.fixture(scope="session")
def tiny_sd15(tiny_model_dir) -> Path:
    """Path of the tiny SD1.5-architecture diffusers folder."""
    return tiny_model_dir("sd15")

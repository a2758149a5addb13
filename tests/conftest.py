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


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module's tests: tiny models run fastest so, and do not fight other processes for the
    cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

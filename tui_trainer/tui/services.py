"""The core functions the TUI calls (estimator, GPU probe, dataset report), injectable for tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any


def _optional(module: str, name: str) -> Callable[..., Any] | None:
    try:
        return getattr(import_module(module), name)
    except (ImportError, AttributeError):
        return None


@dataclass(frozen=True)
class Services:
    """estimate(config, gpu, *, target_bytes), probe_gpus(), build_report(config, config_path); None = not available."""

    estimate: Callable[..., Any] | None = None
    probe_gpus: Callable[[], Any] | None = None
    build_report: Callable[..., Any] | None = None

    @classmethod
    def default(cls) -> Services:
        """The real core functions (tui_trainer.estimate and tui_trainer.data), where installed."""
        return cls(
            estimate=_optional("tui_trainer.estimate", "estimate"),
            probe_gpus=_optional("tui_trainer.estimate", "probe_gpus"),
            build_report=_optional("tui_trainer.data", "build_report"),
        )

"""Helpers for the TUI tests: deterministic services, screen text, waiting on conditions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui_trainer.tui.app import TrainerApp
from tui_trainer.tui.services import Services
from tui_trainer.units import GIB



@dataclass
class FakeProbe:
    """A GPU probe result with no GPU (the real probe's shape)."""

    gpus: list[Any] = field(default_factory=list)
    ram_total_bytes: int = 64 * GIB
    ram_available_bytes: int = 48 * GIB
    message: str = "no NVIDIA GPU detected"


@dataclass
class FakeSuggestion:
    change: str
    saves_bytes: int


@dataclass
class FakeEstimate:
    total_bytes: int
    breakdown: dict[str, int]
    budget_bytes: int | None
    fits: bool | None
    suggestions: list[FakeSuggestion]
    warnings: list[str]
    peak_phase: str = "training step"


def fake_estimate(config, gpu=None, *, target_bytes=None) -> FakeEstimate:
    """A deterministic stand-in for the estimator: activations grow with batch size."""
    breakdown = {
        "weights": 2 * GIB, "trainable": GIB // 8, "gradients": GIB // 8, "optimizer": GIB // 4,
        "activations": config.training.batch_size * GIB // 2, "caches": 0, "overhead": GIB // 2,
    }
    total = sum(breakdown.values())
    fits = None if target_bytes is None else total <= target_bytes
    suggestions = [FakeSuggestion("batch 1 + accumulation", (config.training.batch_size - 1) * GIB // 2)]
    return FakeEstimate(total, breakdown, target_bytes, fits, suggestions, [])


def real_or_fake_estimate() -> Callable[..., Any]:
    """The real estimator once it exists, else the fake."""
    return Services.default().estimate or fake_estimate


def services(*, estimate: Callable[..., Any] | None = None) -> Services:
    """Real dataset report, a fixed no-GPU probe, and the given (default: real or fake) estimator."""
    return Services(estimate=estimate or real_or_fake_estimate(), probe_gpus=FakeProbe,
                    build_report=Services.default().build_report)


def make_app(tmp_path: Path, config_path: Path | None = None, **kwargs: Any) -> TrainerApp:
    """An app with its state and config dirs under tmp_path, a 24 GiB target and no cursor blink."""
    kwargs.setdefault("services", services())
    kwargs.setdefault("target_bytes", 24 * GIB)
    return TrainerApp(config_path, state_dir=tmp_path / "state", config_dir=tmp_path / "config",
                      cursor_blink=False, **kwargs)


def screen_text(app: TrainerApp) -> str:
    """The visible screen as plain text."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


async def wait_for(pilot: Any, condition: Callable[[], Any], timeout: float = 10.0) -> None:
    """Let the app run until `condition()` is true (fail after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s:\n{screen_text(pilot.app)}")
        await pilot.pause(0.02)
    await asyncio.sleep(0)

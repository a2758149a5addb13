"""What a run's events add up to: step, loss, phase progress, samples, errors. Pure Python, no torch or textual."""

from __future__ import annotations

import os
import re
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui_trainer.runs.events import (
    BackupEvent, CacheProgressEvent, EndEvent, ErrorEvent, Event, ResumeEvent, SampleEvent, SaveEvent, StartEvent,
    StepEvent, WarningEvent, parse_events,
)
from tui_trainer.runs.layout import RunDir
from tui_trainer.runs.status import TERMINAL_STATES, RunState, read_status

SAMPLE_NAME = re.compile(r"step-(\d+)-(\d+)\.(?:png|jpe?g|webp)$")
"""Sample image names: samples/step-000120-0.png (step, prompt index)."""

HEAD_TAIL_BYTES = 64 * 1024
"""How much of events.jsonl the runs list reads at each end."""


@dataclass
class CacheProgress:
    """Progress of one cache kind (latents or text), with the rate since its first event."""

    kind: str
    done: int
    total: int
    hits: int
    first_time: float
    first_done: int
    time: float

    def eta_s(self) -> float | None:
        """Seconds left at the rate so far (None until it moved)."""
        moved = self.done - self.first_done
        if moved <= 0 or self.time <= self.first_time:
            return None
        return (self.total - self.done) * (self.time - self.first_time) / moved


@dataclass
class Sample:
    """One sample image and the prompt it was made from."""

    path: Path
    prompt: str
    step: int


@dataclass
class RunSummary:
    """Everything the monitor shows, folded from events (call `apply` per event, in order)."""

    step: int = 0
    total_steps: int | None = None
    epoch: int | None = None
    epochs: int | None = None
    loss: float | None = None
    smoothed_loss: float | None = None
    lr: dict[str, float] = field(default_factory=dict)
    it_per_s: float | None = None
    eta_s: float | None = None
    vram_bytes: int | None = None
    family: str | None = None
    method: str | None = None
    device: str | None = None
    first_time: float | None = None
    last_time: float | None = None
    step_time: float | None = None
    cache: CacheProgress | None = None
    error: ErrorEvent | None = None
    end: EndEvent | None = None
    warnings: int = 0
    sample_events: list[SampleEvent] = field(default_factory=list)
    backups: list[BackupEvent] = field(default_factory=list)
    saves: list[SaveEvent] = field(default_factory=list)

    def apply(self, event: Event) -> None:
        """Fold one event in; unknown kinds only move the clock."""
        if event.time is not None:
            self.first_time = event.time if self.first_time is None else self.first_time
            self.last_time = event.time
        handler = EVENT_HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)


def _on_start(summary: RunSummary, event: StartEvent) -> None:
    summary.total_steps = event.total_steps if event.total_steps is not None else summary.total_steps
    summary.epochs = event.epochs if event.epochs is not None else summary.epochs
    summary.family = event.family or summary.family
    summary.method = event.method or summary.method
    summary.device = event.device or summary.device
    summary.error = None
    summary.end = None


def _on_resume(summary: RunSummary, event: ResumeEvent) -> None:
    summary.step = event.step
    summary.total_steps = event.total_steps if event.total_steps is not None else summary.total_steps
    summary.error = None
    summary.end = None


def _on_step(summary: RunSummary, event: StepEvent) -> None:
    for name in ("step", "total_steps", "epoch", "epochs", "loss", "smoothed_loss", "lr", "it_per_s", "eta_s", "vram_bytes"):
        setattr(summary, name, getattr(event, name))
    summary.step_time = event.time
    summary.cache = None


def _on_cache_progress(summary: RunSummary, event: CacheProgressEvent) -> None:
    current, when = summary.cache, event.time or 0.0
    if current is None or current.kind != event.kind or event.done < current.done:
        summary.cache = CacheProgress(event.kind, event.done, event.total, event.hits, when, event.done, when)
    else:
        current.done, current.total, current.hits, current.time = event.done, event.total, event.hits, when


def _on_error(summary: RunSummary, event: ErrorEvent) -> None:
    summary.error = event


def _on_end(summary: RunSummary, event: EndEvent) -> None:
    summary.end = event


def _on_warning(summary: RunSummary, event: WarningEvent) -> None:
    summary.warnings += 1


EVENT_HANDLERS: dict[type[Event], Callable[[RunSummary, Any], None]] = {
    StartEvent: _on_start,
    ResumeEvent: _on_resume,
    StepEvent: _on_step,
    CacheProgressEvent: _on_cache_progress,
    ErrorEvent: _on_error,
    EndEvent: _on_end,
    WarningEvent: _on_warning,
    SampleEvent: lambda summary, event: summary.sample_events.append(event),
    BackupEvent: lambda summary, event: summary.backups.append(event),
    SaveEvent: lambda summary, event: summary.saves.append(event),
}
"""Event class -> how it changes the summary."""


def read_run_config(run: RunDir) -> dict[str, Any]:
    """The run's config.toml as plain TOML (no validation: fast, and never fails the viewer)."""
    try:
        return tomllib.loads(run.config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}


def sample_prompts(config: dict[str, Any]) -> list[str]:
    """The prompts of the config's [[samples]] tables, in order."""
    return [str(sample.get("prompt", "")) for sample in config.get("samples", []) if isinstance(sample, dict)]


def latest_samples(run: RunDir, summary: RunSummary, prompts: list[str]) -> list[Sample]:
    """The newest sample set: the last `sample` event's images, else the highest step found in samples/."""
    for event in reversed(summary.sample_events):
        if event.paths:
            return [_sample(Path(path), event.prompts[index] if index < len(event.prompts) else None, prompts, event.step)
                    for index, path in enumerate(event.paths)]
    try:
        names = os.listdir(run.samples_dir)
    except OSError:
        return []
    found = [(int(match[1]), int(match[2]), name) for name in names if (match := SAMPLE_NAME.search(name))]
    if not found:
        return []
    newest = max(step for step, _, _ in found)
    return [_sample(run.samples_dir / name, None, prompts, step) for step, _, name in sorted(found) if step == newest]


def _sample(path: Path, prompt: str | None, prompts: list[str], step: int | None) -> Sample:
    match = SAMPLE_NAME.search(path.name)
    index = int(match[2]) if match else -1
    if prompt is None:
        prompt = prompts[index] if 0 <= index < len(prompts) else ""
    if step is None:
        step = int(match[1]) if match else 0
    return Sample(path, prompt, int(step))


@dataclass
class RunListing:
    """One line of the runs list."""

    run: RunDir
    family: str
    method: str
    state: str
    step: int
    total_steps: int | None
    last_loss: float | None
    started_at: float
    duration_s: float
    epochs: int | None

    @property
    def live(self) -> bool:
        """Whether a trainer is (or should be) running."""
        return self.state not in TERMINAL_STATES


def _lines(chunk: bytes, *, skip_first: bool) -> list[Event]:
    lines = chunk.split(b"\n")
    return parse_events(lines[1:] if skip_first else lines)


def summarize_run(run: RunDir, now: float | None = None) -> RunListing:
    """A run's list line from its config, status.json and both ends of events.jsonl (fast on long runs)."""
    config = read_run_config(run)
    status = read_status(run)
    head: list[Event] = []
    tail: list[Event] = []
    try:
        with open(run.events_file, "rb") as handle:
            head = _lines(handle.read(HEAD_TAIL_BYTES), skip_first=False)
            size = handle.seek(0, os.SEEK_END)
            start = max(0, size - HEAD_TAIL_BYTES)
            handle.seek(start)
            tail = _lines(handle.read(), skip_first=start > 0)
    except OSError:
        pass
    summary = RunSummary()
    for event in head + tail:
        summary.apply(event)
    try:
        created = run.config_file.stat().st_mtime
    except OSError:
        created = time.time()
    started = min(created, summary.first_time or created)
    state = str(status.get("state", RunState.STARTING.value))
    finished = state in TERMINAL_STATES
    last = summary.last_time or float(status.get("updated_at") or started)
    duration = (last if finished else (now or time.time())) - started
    training = config.get("training", {}) if isinstance(config.get("training"), dict) else {}
    model = config.get("model", {}) if isinstance(config.get("model"), dict) else {}
    return RunListing(
        run=run,
        family=str(model.get("family") or summary.family or "?"),
        method=str(config.get("method") or summary.method or "?"),
        state=state,
        step=max(int(status.get("step") or 0), summary.step),
        total_steps=status.get("total_steps") or summary.total_steps,
        last_loss=summary.loss,
        started_at=started,
        duration_s=max(0.0, duration),
        epochs=training.get("epochs", summary.epochs),
    )

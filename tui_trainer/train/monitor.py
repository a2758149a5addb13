"""Everything a run reports: events.jsonl, status.json, train.log + console, TensorBoard scalars."""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TextIO

from tui_trainer.runs.events import CacheProgressEvent, ErrorEvent, Event, EventWriter, StepEvent, ValidationEvent, WarningEvent
from tui_trainer.runs.layout import RunDir
from tui_trainer.runs.status import RunState, write_status
from tui_trainer.units import format_duration

STATUS_INTERVAL_S = 1.0
"""status.json is rewritten at most this often during steps (always on state changes)."""


TENSORBOARD_FLUSH_S = 5
"""TensorBoard's writer flushes on its own this often (and when training ends)."""


def tensorboard_scalars(writer: Any) -> Callable[..., None]:
    """A tracker (scalars, step=...) adding scalars to a TensorBoard `SummaryWriter` without flushing it.

    Used instead of `accelerator.log`, whose tracker flushes after every call: a wait on the writer's
    thread at every step (0.3 ms a step on the tiny model's 30 ms). The writer flushes every
    `TENSORBOARD_FLUSH_S` and when accelerate ends training; events.jsonl keeps every step regardless."""

    def track(scalars: dict[str, float], step: int) -> None:
        for name, value in scalars.items():
            writer.add_scalar(name, value, global_step=step)

    return track


def chain_trackers(*trackers: Callable[..., Any] | None) -> Callable[..., Any] | None:
    """One tracker (scalars, step=...) calling each given one in turn; None when none is given."""
    given = [tracker for tracker in trackers if tracker is not None]
    if len(given) < 2:
        return given[0] if given else None

    def track(scalars: dict[str, float], step: int) -> None:
        for tracker in given:
            tracker(scalars, step=step)

    return track


class StepTimer:
    """Seconds per optimizer step over a sliding window, and the ETA it implies."""

    def __init__(self, window: int = 20):
        self.times: deque[float] = deque(maxlen=window + 1)

    def tick(self) -> None:
        """Mark the end of a step."""
        self.times.append(time.perf_counter())

    @property
    def seconds_per_step(self) -> float | None:
        """Mean step time of the window, or None before two ticks."""
        if len(self.times) < 2:
            return None
        return (self.times[-1] - self.times[0]) / (len(self.times) - 1)


class RunMonitor:
    """The trainer's single way to report: one call writes the event, the log line and the status."""

    def __init__(self, run: RunDir, *, console: TextIO | None = None, tracker: Any = None):
        self.run = run
        self.events = EventWriter(run)
        self.log = open(run.log_file, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run
        self.console = console
        self.tracker = tracker
        self.listeners: list[Callable[[Event], None]] = []
        """Called with every event `emit` writes (the notifier)."""
        self.live = bool(console is not None and console.isatty())
        self._last_status = 0.0
        self._progress_shown = False

    def line(self, text: str, *, progress: bool = False) -> None:
        """A log line: to train.log, and to the console (rewritten in place for progress on a terminal)."""
        stamped = f"{time.strftime('%H:%M:%S')} {text}"
        self.log.write(stamped + "\n")
        self.log.flush()
        if self.console is None:
            return
        if progress and self.live:
            self.console.write(f"\r{stamped}\x1b[K")
            self._progress_shown = True
        else:
            if self._progress_shown:
                self.console.write("\n")
                self._progress_shown = False
            self.console.write(stamped + "\n")
        self.console.flush()

    def status(self, state: RunState, **fields: Any) -> None:
        """Rewrite status.json now."""
        write_status(self.run, state=state, **fields)
        self._last_status = time.monotonic()

    def emit(self, event: Event, text: str | None = None) -> Event:
        """Write an event and, if given, a log line; returns the event with its time."""
        event = self.events.emit(event)
        if text is not None:
            self.line(text)
        for listener in self.listeners:
            listener(event)
        return event

    def warning(self, message: str, **fields: Any) -> None:
        """A `warning` event (`fields`: those of `WarningEvent`)."""
        self.emit(WarningEvent(message=message, **fields), f"warning: {message}")

    def error(self, message: str, hint: str = "", **fields: Any) -> None:
        """An `error` event (`fields`: those of `ErrorEvent`)."""
        self.emit(ErrorEvent(message=message, hint=hint, **fields), f"error: {message}" + (f"\nhint: {hint}" if hint else ""))

    def cache_progress(self, kind: str, done: int, total: int, hits: int) -> None:
        """A `cache_progress` event (and a progress line)."""
        self.events.emit(CacheProgressEvent(kind=kind, done=done, total=total, hits=hits))
        self.line(f"caching {kind} {done}/{total} ({hits} reused)", progress=done < total)

    def step(self, event: StepEvent, state: RunState = RunState.TRAINING) -> None:
        """A `step` event, a progress line, TensorBoard scalars and (throttled) status."""
        self.events.emit(event)
        lrs = " ".join(f"lr[{name}] {lr:.2e}" for name, lr in event.lr.items())
        self.line(
            f"step {event.step}/{event.total_steps} epoch {event.epoch}/{event.epochs} "
            f"loss {event.loss:.4f} (avg {event.smoothed_loss:.4f}) {lrs} "
            f"{event.it_per_s or 0:.2f} it/s ETA {format_duration(event.eta_s)}",
            progress=True,
        )
        if self.tracker is not None:
            scalars = {"loss": event.loss, "smoothed_loss": event.smoothed_loss}
            scalars.update({f"lr/{name}": lr for name, lr in event.lr.items()})
            self.tracker(scalars, step=event.step)
        if time.monotonic() - self._last_status >= STATUS_INTERVAL_S or event.step == event.total_steps:
            self.status(state, step=event.step, epoch=event.epoch, total_steps=event.total_steps)

    def validation(self, event: ValidationEvent) -> None:
        """A `validation` event, its log line and TensorBoard scalars (validation/loss, validation/<concept>)."""
        concepts = " ".join(f"{name} {loss:.4f}" for name, loss in event.concepts.items())
        self.emit(event, f"validation at step {event.step}: loss {event.loss:.4f} ({concepts}; {event.images} images, {event.seconds:.1f} s)")
        if self.tracker is not None:
            scalars = {"validation/loss": event.loss} | {f"validation/{name}": loss for name, loss in event.concepts.items()}
            self.tracker(scalars, step=event.step)

    def close(self) -> None:
        """Flush and close the files."""
        if self.console is not None and self._progress_shown:
            self.console.write("\n")
            self.console.flush()
        self.events.close()
        self.log.close()


class SilentMonitor(RunMonitor):
    """The monitor of every process but the main one: it writes nothing in the run directory (one writer), and
its errors go to stderr."""

    def __init__(self, run: RunDir, rank: str = "?"):
        self.run = run
        self.rank = rank
        self.console = None
        self.tracker = None

    def error(self, message: str, hint: str = "", **fields: Any) -> None:
        """To stderr (train.log or the launcher's terminal), so a failure of this process is not lost."""
        print(f"process {self.rank}: error: {message}", file=sys.stderr, flush=True)

    def line(self, text: str, *, progress: bool = False) -> None:
        """Nothing."""

    def status(self, state: RunState, **fields: Any) -> None:
        """Nothing."""

    def emit(self, event: Event, text: str | None = None) -> Event:
        """The event, unwritten."""
        return event

    def cache_progress(self, kind: str, done: int, total: int, hits: int) -> None:
        """Nothing."""

    def step(self, event: StepEvent, state: RunState = RunState.TRAINING) -> None:
        """Nothing."""

    def close(self) -> None:
        """Nothing."""

"""events.jsonl: append-only, one JSON object per line; readers tail it by byte offset.

Each kind of line is a dataclass below, written and read by one `Event.to_json` / `event_from_json`. A reader
never fails on what a newer trainer wrote: a kind it does not know is an `UnknownEvent` (the raw object), and a
field it does not know, or one that no longer has its type, stays in the event's `extra`; both show as text.
"""

from __future__ import annotations

import functools
import json
import os
import time
import types
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, Union, get_args, get_origin, get_type_hints

from tui_trainer.runs.layout import RunDir

OMIT_NONE = {"omit_none": True}
"""Field metadata: the field is left out of the JSON while it is None (as the trainer has always written it)."""


def _optional() -> Any:
    return field(default=None, metadata=OMIT_NONE)


@dataclass(kw_only=True)
class Event:
    """What every event has: its kind (the JSON "type"), the time it was written, and the fields this reader does
    not know (`extra`, written back as they were)."""

    KIND: ClassVar[str] = ""
    time: float | None = _optional()
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def type(self) -> str:
        """The JSON "type"."""
        return self.KIND

    def to_json(self) -> dict[str, Any]:
        """The JSON object: "type", "time", the fields in their order, then the unknown ones."""
        known = {item.name: getattr(self, item.name) for item in fields(self) if item.name != "extra"
                 and not (item.metadata.get("omit_none") and getattr(self, item.name) is None)}
        return {"type": self.type, **known, **self.extra}

    def unknown_text(self) -> str | None:
        """What this reader could not read, as one line of text; None when it knows every field."""
        if not self.extra:
            return None
        return f"{self.type} event with fields this viewer does not know: {json.dumps(self.extra, default=str)}"


@dataclass(kw_only=True)
class UnknownEvent(Event):
    """A line of a kind this reader does not know (a newer trainer wrote it), kept as it was read."""

    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def type(self) -> str:
        """The line's "type", as text."""
        return str(self.raw.get("type", "?"))

    def to_json(self) -> dict[str, Any]:
        """The object as it was read."""
        return dict(self.raw)

    def unknown_text(self) -> str:
        """The whole line."""
        return f"event this viewer does not know: {json.dumps(self.raw, default=str)}"


@dataclass(kw_only=True)
class StartEvent(Event):
    """The run starts (again on a resume): what it trains, on what, for how long."""

    KIND: ClassVar[str] = "start"
    config_hash: str = ""
    run: str = ""
    method: str | None = None
    family: str | None = None
    base_model: str = ""
    seed: int | None = None
    device: str | None = None
    mixed_precision: str = ""
    num_processes: int = 1
    epochs: int | None = None
    total_images: int = 0
    batches_per_epoch: int = 0
    steps_per_epoch: int = 0
    total_steps: int | None = None
    effective_batch: int = 1
    buckets: list[Any] = field(default_factory=list)
    trainable_params: dict[str, int] = field(default_factory=dict)


@dataclass(kw_only=True)
class ResumeEvent(Event):
    """Training goes on from a backup."""

    KIND: ClassVar[str] = "resume"
    step: int = 0
    epoch: int = 0
    batch_index: int = 0
    backup: str = ""
    changed: list[str] = field(default_factory=list)
    total_steps: int | None = None


@dataclass(kw_only=True)
class CacheProgressEvent(Event):
    """Progress of caching one kind (latents or text); `hits` were reused from an earlier run."""

    KIND: ClassVar[str] = "cache_progress"
    kind: str = "?"
    done: int = 0
    total: int = 0
    hits: int = 0


@dataclass(kw_only=True)
class StepEvent(Event):
    """One optimizer step: loss, learning rate per parameter group, speed, ETA and (on CUDA) reserved VRAM."""

    KIND: ClassVar[str] = "step"
    step: int = 0
    total_steps: int | None = None
    epoch: int | None = None
    epochs: int | None = None
    loss: float | None = None
    smoothed_loss: float | None = None
    lr: dict[str, float] = field(default_factory=dict)
    it_per_s: float | None = None
    s_per_step: float | None = None
    eta_s: float | None = None
    vram_bytes: int | None = _optional()


@dataclass(kw_only=True)
class SampleEvent(Event):
    """Sample images of a step, one per configured prompt."""

    KIND: ClassVar[str] = "sample"
    step: int = 0
    paths: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class ValidationEvent(Event):
    """Validation loss at a step: the mean over the held-out images (fixed seeded draws, no gradients) and per concept."""

    KIND: ClassVar[str] = "validation"
    step: int = 0
    epoch: int | None = None
    loss: float | None = None
    concepts: dict[str, float] = field(default_factory=dict)
    images: int = 0
    seconds: float = 0.0


@dataclass(kw_only=True)
class BackupEvent(Event):
    """A complete backup, and the older ones the rolling count removed."""

    KIND: ClassVar[str] = "backup"
    step: int = 0
    path: str = ""
    bytes: int = 0
    seconds: float = 0.0
    removed: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class SaveEvent(Event):
    """One saved model file."""

    KIND: ClassVar[str] = "save"
    path: str = ""
    format: str = ""
    step: int = 0


@dataclass(kw_only=True)
class WarningEvent(Event):
    """Something the user should know; training goes on."""

    KIND: ClassVar[str] = "warning"
    message: str = ""
    path: str | None = _optional()
    paths: list[str] | None = _optional()


@dataclass(kw_only=True)
class ErrorEvent(Event):
    """What ended the run, and what to do about it."""

    KIND: ClassVar[str] = "error"
    message: str = "?"
    hint: str = ""
    step: int | None = _optional()


@dataclass(kw_only=True)
class EndEvent(Event):
    """The run ended: why (completed|stopped|error|...), at which step, and the signal or command that stopped it."""

    KIND: ClassVar[str] = "end"
    reason: str = ""
    step: int = 0
    signal: str | None = _optional()
    command: str | None = _optional()


EVENT_KINDS: dict[str, type[Event]] = {kind.KIND: kind for kind in (
    StartEvent, ResumeEvent, CacheProgressEvent, StepEvent, SampleEvent, ValidationEvent, BackupEvent, SaveEvent,
    WarningEvent, ErrorEvent, EndEvent,
)}
"""JSON "type" -> the event's dataclass."""


@functools.cache
def _field_types(kind: type[Event]) -> dict[str, Any]:
    hints = get_type_hints(kind)
    return {item.name: hints[item.name] for item in fields(kind) if item.name != "extra"}


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value has a field's type (shallow: a list is a list whatever it holds; an int is a float)."""
    if get_origin(hint) in (Union, types.UnionType):
        return any(_fits(value, option) for option in get_args(hint))
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if isinstance(value, bool):
        return hint is bool
    if hint is float:
        return isinstance(value, (int, float))
    return isinstance(value, get_origin(hint) or hint)


def event_from_json(raw: dict[str, Any]) -> Event:
    """The event of one JSON object; an unknown "type" gives an `UnknownEvent`, unknown or mistyped fields go to
    `extra`."""
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in EVENT_KINDS:
        when = raw.get("time")
        return UnknownEvent(time=when if _fits(when, float | None) else None, raw=raw)
    field_types = _field_types(EVENT_KINDS[kind])
    known = {name: value for name, value in raw.items() if name in field_types and _fits(value, field_types[name])}
    extra = {name: value for name, value in raw.items() if name != "type" and name not in known}
    return EVENT_KINDS[kind](**known, extra=extra)


class EventWriter:
    """Appends events to a run's events.jsonl (only the trainer's main process writes)."""

    def __init__(self, run: RunDir):
        self.path = run.events_file
        self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run

    def emit(self, event: Event) -> Event:
        """Append one event, stamped with the time (unix seconds); returns the stamped event."""
        event = replace(event, time=round(time.time(), 3))
        self._handle.write(json.dumps(event.to_json(), separators=(",", ":"), default=str) + "\n")
        self._handle.flush()
        return event

    def sync(self) -> None:
        """Flush to disk (at checkpoints and the end)."""
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        """Close the file."""
        if not self._handle.closed:
            self.sync()
            self._handle.close()


class EventReader:
    """Tails an events file from a byte offset; a partial last line waits for its newline."""

    def __init__(self, path: str | Path, offset: int = 0):
        self.path = Path(path)
        self.offset = offset

    def read_new(self) -> list[Event]:
        """Events appended since the last call (complete lines only; unparsable lines are skipped)."""
        try:
            with open(self.path, "rb") as handle:
                complete, self.offset = read_complete_lines(handle, self.offset)
        except FileNotFoundError:
            return []
        return [] if complete is None else parse_events(complete.split(b"\n"))


def read_complete_lines(handle: BinaryIO, offset: int) -> tuple[bytes | None, int]:
    """The complete lines from `offset` (without the last newline) and the offset after them.

    A partial last line is left for the next read; with no complete line, returns (None, offset).
    """
    handle.seek(offset)
    chunk = handle.read()
    end = chunk.rfind(b"\n")
    return (chunk[:end], offset + end + 1) if end >= 0 else (None, offset)


def parse_events(lines: list[bytes]) -> list[Event]:
    """The events of the JSON objects among `lines`; blank, partial or unparsable lines are skipped."""
    events = []
    for line in lines:
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            events.append(event_from_json(value))
    return events


def read_events(path: str | Path) -> list[Event]:
    """Every complete event in a file."""
    return EventReader(path).read_new()

"""events.jsonl: append-only, one JSON object per line; readers tail it by byte offset."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, BinaryIO

from tui_trainer.runs.layout import RunDir


class EventWriter:
    """Appends events to a run's events.jsonl (only the trainer's main process writes)."""

    def __init__(self, run: RunDir):
        self.path = run.events_file
        self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run

    def emit(self, type: str, **fields: Any) -> dict[str, Any]:
        """Append one event; returns it with its "type" and "time" (unix seconds)."""
        event = {"type": type, "time": round(time.time(), 3), **fields}
        self._handle.write(json.dumps(event, separators=(",", ":"), default=str) + "\n")
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

    def read_new(self) -> list[dict[str, Any]]:
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


def parse_events(lines: list[bytes]) -> list[dict[str, Any]]:
    """The JSON objects among `lines`; blank, partial or unparsable lines are skipped."""
    events = []
    for line in lines:
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            events.append(value)
    return events


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """Every complete event in a file."""
    return EventReader(path).read_new()

"""Everything new in a run folder since the last look: events, log lines, status, pending commands."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tui_trainer.runs.commands import Command, pending_commands
from tui_trainer.runs.events import Event, EventReader, read_complete_lines
from tui_trainer.runs.layout import RunDir
from tui_trainer.runs.status import read_status

LOG_START_BYTES = 256 * 1024
"""On the first look only the end of train.log is read."""


class LogTail:
    """Complete new lines of a text file, by byte offset; the first read starts near the end."""

    def __init__(self, path: Path, start_bytes: int = LOG_START_BYTES):
        self.path = path
        self.offset: int | None = None
        self.start_bytes = start_bytes

    def read_new(self) -> list[str]:
        """Lines appended since the last call (a partial last line waits for its newline)."""
        try:
            with open(self.path, "rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                skip_first = False
                if self.offset is None or self.offset > size:
                    self.offset = max(0, size - self.start_bytes)
                    skip_first = self.offset > 0
                complete, self.offset = read_complete_lines(handle, self.offset)
        except FileNotFoundError:
            return []
        if complete is None:
            return []
        lines = complete.decode("utf-8", errors="replace").split("\n")
        return lines[1:] if skip_first else lines


@dataclass
class RunUpdate:
    """One look at a run folder."""

    events: list[Event]
    log_lines: list[str]
    status: dict[str, Any]
    pending: list[Command]
    samples_changed: bool


class RunWatcher:
    """Reads a run folder incrementally; any number of watchers can follow one run."""

    def __init__(self, run: RunDir):
        self.run = run
        self.events = EventReader(run.events_file)
        self.log = LogTail(run.log_file)
        self._samples_stamp: int | None = -1

    def poll(self) -> RunUpdate:
        """New events and log lines, the current status and the commands not yet taken."""
        events = self.events.read_new()
        log_lines = self.log.read_new()
        try:
            stamp: int | None = self.run.samples_dir.stat().st_mtime_ns
        except OSError:
            stamp = None
        changed = stamp != self._samples_stamp
        self._samples_stamp = stamp
        return RunUpdate(events, log_lines, read_status(self.run), pending_commands(self.run), changed)

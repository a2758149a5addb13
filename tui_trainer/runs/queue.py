"""The run queue of a workspace: configs trained one after another by one runner, with no app open.

    <workspace>/queue/
      <id>.toml          the config as it was added (paths made absolute), so later edits do not change it
      <id>.json          {"id", "name", "source", "added_at", "position"}: written by add and move
      <id>.state.json    {"state", "run", "exit_code", ...}: written by the runner only
      paused             present while the queue is paused
      runner.lock        flock'ed by the one runner; holds its pid
      runner.log         output of a detached runner

Every file is its own and written atomically, so two adders never lose an entry and a move never undoes the
runner's state. No torch: each entry trains in its own `tui-trainer train CONFIG --run-dir RUN` process.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from tui_trainer.atomic import atomic_write_json, atomic_write_text
from tui_trainer.runs.commands import Command, send_command
from tui_trainer.runs.launch import trainer_command
from tui_trainer.runs.layout import RunDir, create_run_dir
from tui_trainer.runs.status import RunState, read_status

QUEUE_FOLDER = "queue"
PAUSED_FILE = "paused"
LOCK_FILE = "runner.lock"
RUNNER_LOG = "runner.log"
PAUSED_POLL_S = 1.0
"""How often a runner of a paused queue looks whether it was resumed."""


class EntryState(StrEnum):
    """Where a queued config is."""

    PENDING = "pending"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    STOPPED = "stopped"


RUN_OUTCOMES: dict[str, EntryState] = {
    RunState.FINISHED: EntryState.FINISHED, RunState.STOPPED: EntryState.STOPPED,
    RunState.FAILED: EntryState.FAILED, RunState.CRASHED: EntryState.FAILED,
}
"""A trainer's final run state -> its queue entry's state (anything else, e.g. no status at all, is a failure)."""


class QueueError(ValueError):
    """A queue command that cannot be done (the message says why and what to do)."""


@dataclass(frozen=True)
class QueueEntry:
    """One queued config and what became of it."""

    id: str
    name: str
    source: str
    added_at: float
    position: float
    state: EntryState = EntryState.PENDING
    run: str | None = None
    exit_code: int | None = None
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        """The entry as `tui-trainer queue list --json` prints it."""
        return {"id": self.id, "name": self.name, "source": self.source, "added_at": self.added_at,
                "state": self.state.value, "run": self.run, "exit_code": self.exit_code, "message": self.message}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


class RunQueue:
    """The queue folder of one workspace."""

    def __init__(self, workspace: str | Path):
        self.workspace = Path(workspace).expanduser().resolve()
        self.folder = self.workspace / QUEUE_FOLDER

    def config_file(self, entry: QueueEntry) -> Path:
        """The config snapshot the entry trains."""
        return self.folder / f"{entry.id}.toml"

    def _entry_file(self, entry_id: str) -> Path:
        return self.folder / f"{entry_id}.json"

    def _state_file(self, entry_id: str) -> Path:
        return self.folder / f"{entry_id}.state.json"

    def entries(self) -> list[QueueEntry]:
        """Every entry, in queue order (finished ones stay until removed)."""
        if not self.folder.is_dir():
            return []
        found = []
        for path in self.folder.glob("*.json"):
            if path.name.endswith(".state.json") or path.name.startswith("."):
                continue
            entry = _read_json(path)
            if entry is None or not (self.folder / f"{path.stem}.toml").is_file():
                continue
            state = _read_json(self._state_file(path.stem)) or {}
            if state.get("state") not in set(EntryState):
                state = {**state, "state": EntryState.FAILED if state else EntryState.PENDING}
            found.append(QueueEntry(
                id=path.stem, name=str(entry.get("name", path.stem)), source=str(entry.get("source", "")),
                added_at=float(entry.get("added_at", 0)), position=float(entry.get("position", 0)),
                state=EntryState(state.get("state", EntryState.PENDING)), run=state.get("run"),
                exit_code=state.get("exit_code"), message=str(state.get("message", "")),
            ))
        return sorted(found, key=lambda entry: (entry.position, entry.added_at, entry.id))

    def add(self, config_text: str, name: str, source: str | Path) -> QueueEntry:
        """Append a config (its TOML text, paths absolute) at the end of the queue."""
        self.folder.mkdir(parents=True, exist_ok=True)
        entry_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        positions = [entry.position for entry in self.entries()]
        entry = QueueEntry(id=entry_id, name=name, source=str(source), added_at=round(time.time(), 3),
                           position=max(positions, default=0.0) + 1)
        atomic_write_text(self.folder / f"{entry_id}.toml", config_text)
        self._write_entry(entry)
        return entry

    def _write_entry(self, entry: QueueEntry) -> None:
        atomic_write_json(self._entry_file(entry.id), {"id": entry.id, "name": entry.name, "source": entry.source,
                                                       "added_at": entry.added_at, "position": entry.position})

    def set_state(self, entry: QueueEntry, state: EntryState, **fields: Any) -> None:
        """Record what became of an entry (the runner's file)."""
        previous = _read_json(self._state_file(entry.id)) or {}
        atomic_write_json(self._state_file(entry.id), {**previous, **fields, "state": state.value, "updated_at": round(time.time(), 3)})

    def find(self, key: str) -> QueueEntry:
        """An entry by id (or a unique id prefix) or by its 1-based position in `entries()`."""
        entries = self.entries()
        if key.isdigit() and 1 <= int(key) <= len(entries):
            return entries[int(key) - 1]
        matches = [entry for entry in entries if entry.id.startswith(key)]
        if len(matches) == 1:
            return matches[0]
        if not entries:
            raise QueueError(f"{key!r}: the queue in {self.folder} is empty")
        what = "matches several entries" if matches else "is no entry"
        known = ", ".join(entry.id for entry in entries)
        raise QueueError(f"{key!r} {what} of {self.folder}; give a position 1-{len(entries)} or an id ({known})")

    def remove(self, key: str) -> QueueEntry:
        """Take an entry out of the queue (not the running one); its run folder, if any, stays."""
        entry = self.find(key)
        if entry.state is EntryState.RUNNING:
            raise QueueError(f"{entry.id} is running in {entry.run}; stop it first (x on its run screen, or touch {entry.run}/commands/stop)")
        for path in (self._entry_file(entry.id), self._state_file(entry.id), self.config_file(entry)):
            path.unlink(missing_ok=True)
        return entry

    def move(self, key: str, position: int) -> QueueEntry:
        """Put an entry at a 1-based position of the queue order (the others keep their order)."""
        entry = self.find(key)
        others = [other for other in self.entries() if other.id != entry.id]
        if not 1 <= position <= len(others) + 1:
            raise QueueError(f"position {position} is outside the queue; allowed: 1-{len(others) + 1}")
        others.insert(position - 1, entry)
        for index, item in enumerate(others, start=1):
            if item.position != index:
                self._write_entry(QueueEntry(id=item.id, name=item.name, source=item.source, added_at=item.added_at, position=index))
        return entry

    @property
    def paused(self) -> bool:
        """Whether the runner waits before starting the next entry."""
        return (self.folder / PAUSED_FILE).exists()

    def pause(self) -> None:
        """The runner starts no further entry (the running one goes on) until `resume`."""
        atomic_write_text(self.folder / PAUSED_FILE, f"{time.time():.3f}\n")

    def resume(self) -> None:
        """Let the runner go on."""
        (self.folder / PAUSED_FILE).unlink(missing_ok=True)

    def next_pending(self) -> QueueEntry | None:
        """The first pending entry, or None."""
        return next((entry for entry in self.entries() if entry.state is EntryState.PENDING), None)

    def runner_pid(self) -> int | None:
        """The pid of the runner holding the lock, or None when no runner runs."""
        lock = self.folder / LOCK_FILE
        try:
            handle = open(lock, "a+")  # noqa: SIM115 - closed below
        except OSError:
            return None
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                text = handle.read().strip()
                return int(text) if text.isdigit() else -1
            fcntl.flock(handle, fcntl.LOCK_UN)
        return None

    @contextmanager
    def runner_lock(self) -> Iterator[None]:
        """Hold the one-runner lock (QueueError naming the holder's pid when another runner has it)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / LOCK_FILE, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "?"
                raise QueueError(f"the queue of {self.workspace} already has a runner (pid {holder})") from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            try:
                yield
            finally:
                handle.seek(0)
                handle.truncate()
                fcntl.flock(handle, fcntl.LOCK_UN)


class QueueRunner:
    """Trains the pending entries one after another, each in its own trainer process writing a new run folder."""

    def __init__(self, queue: RunQueue, *, stop_on_failure: bool = False, say: Callable[[str], None] = print):
        self.queue = queue
        self.stop_on_failure = stop_on_failure
        self.say = say
        self.current: RunDir | None = None
        self.stopping = False

    def run(self) -> int:
        """Run until nothing is pending (waiting while paused); 0, or 1 when an entry failed."""
        failed = False
        with self.queue.runner_lock(), self._signals():
            self._settle_stale()
            while not self.stopping:
                if self.queue.paused:
                    if self.queue.next_pending() is None:
                        break
                    time.sleep(PAUSED_POLL_S)
                    continue
                entry = self.queue.next_pending()
                if entry is None:
                    break
                state = self.train(entry)
                failed |= state is EntryState.FAILED
                if state is EntryState.FAILED and self.stop_on_failure:
                    self.say(f"queue: {entry.name} failed; stopping (--stop-on-failure)")
                    break
        self.say("queue: nothing pending" if self.queue.next_pending() is None else "queue: stopped; entries left pending")
        return 1 if failed else 0

    def train(self, entry: QueueEntry) -> EntryState:
        """Train one entry to its end; returns and records its final state."""
        config_file = self.queue.config_file(entry)
        workspace = self._workspace_of(config_file)
        run = create_run_dir(workspace, entry.name, config_file.read_text(encoding="utf-8"))
        self.current = run
        self.queue.set_state(entry, EntryState.RUNNING, run=str(run.path), started_at=round(time.time(), 3))
        self.say(f"queue: {entry.id} ({entry.name}) training in {run.path}")
        with open(run.log_file, "ab") as log:
            process = subprocess.Popen(
                trainer_command(config_file, run), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            code = process.wait()
        self.current = None
        outcome = RUN_OUTCOMES.get(read_status(run).get("state"), EntryState.FAILED)
        if code != 0 and outcome is EntryState.FINISHED:
            outcome = EntryState.FAILED
        self.queue.set_state(entry, outcome, exit_code=code, ended_at=round(time.time(), 3),
                             message=f"trainer exited with {code}" if code else "")
        self.say(f"queue: {entry.id} ({entry.name}) {outcome.value} (exit {code}); run folder {run.path}")
        return outcome

    def _workspace_of(self, config_file: Path) -> Path:
        """The entry config's workspace.dir (absolute since it was added), else the queue's workspace."""
        import tomllib

        try:
            folder = tomllib.loads(config_file.read_text(encoding="utf-8")).get("workspace", {}).get("dir")
        except (OSError, tomllib.TOMLDecodeError):
            folder = None
        return Path(folder) if isinstance(folder, str) and Path(folder).is_absolute() else self.queue.workspace

    def _settle_stale(self) -> None:
        """Entries left 'running' by a runner that died: their run's final state, else failed."""
        for entry in self.queue.entries():
            if entry.state is EntryState.RUNNING:
                state = read_status(RunDir(Path(entry.run))).get("state") if entry.run else None
                self.queue.set_state(entry, RUN_OUTCOMES.get(state, EntryState.FAILED), message="its runner ended while it ran")

    @contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGTERM / SIGINT: stop the running entry cleanly (a stop command: backup, save, end), then end the runner."""

        def stop(signum: int, frame: Any) -> None:
            self.stopping = True
            if self.current is not None:
                send_command(self.current, Command.STOP)

        previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def runner_command(workspace: Path, *, stop_on_failure: bool = False) -> list[str]:
    """The command line of a foreground queue runner."""
    command = [sys.executable, "-m", "tui_trainer.cli", "queue", "run", "--workspace", str(workspace)]
    return [*command, "--stop-on-failure"] if stop_on_failure else command


def detach_runner(queue: RunQueue, *, stop_on_failure: bool = False) -> int:
    """Start a queue runner in its own session (output to queue/runner.log); its pid. QueueError if one runs."""
    holder = queue.runner_pid()
    if holder is not None:
        raise QueueError(f"the queue of {queue.workspace} already has a runner (pid {holder})")
    queue.folder.mkdir(parents=True, exist_ok=True)
    with open(queue.folder / RUNNER_LOG, "ab") as log:
        process = subprocess.Popen(
            runner_command(queue.workspace, stop_on_failure=stop_on_failure), stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True, close_fds=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    return process.pid

"""status.json: the run's current state, rewritten atomically; readers detect a dead trainer."""

from __future__ import annotations

import json
import os
import socket
import time
from enum import StrEnum
from typing import Any

from tui_trainer.atomic import atomic_write_json
from tui_trainer.runs.layout import RunDir


class RunState(StrEnum):
    """States a run can be in; `crashed` is never written, only derived by readers."""

    STARTING = "starting"
    LOADING = "loading"
    CACHING = "caching"
    TRAINING = "training"
    SAMPLING = "sampling"
    SAVING = "saving"
    STOPPED = "stopped"
    FINISHED = "finished"
    FAILED = "failed"
    CRASHED = "crashed"


TERMINAL_STATES = frozenset({RunState.STOPPED, RunState.FINISHED, RunState.FAILED, RunState.CRASHED})


def write_status(run: RunDir, **fields: Any) -> dict[str, Any]:
    """Merge `fields` into status.json and write it atomically.

    pid and host are the calling process's unless given (the launcher gives its child's pid), so a
    resumed run in a new process never keeps the old pid.
    """
    status = _read_raw(run)
    status.update({"pid": os.getpid(), "host": socket.gethostname()})
    status.update({key: (value.value if isinstance(value, StrEnum) else value) for key, value in fields.items()})
    status["updated_at"] = round(time.time(), 3)
    atomic_write_json(run.status_file, status)
    return status


def _read_raw(run: RunDir) -> dict[str, Any]:
    try:
        value = json.loads(run.status_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine (zombies count as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def read_status(run: RunDir) -> dict[str, Any]:
    """status.json, with state 'crashed' when the trainer on this host is gone without a final state."""
    status = _read_raw(run)
    if not status:
        return {"state": RunState.CRASHED.value if run.exists() and not run.events_file.exists() else RunState.STARTING.value}
    state = status.get("state", RunState.STARTING.value)
    same_host = status.get("host") == socket.gethostname()
    pid = status.get("pid")
    if state not in TERMINAL_STATES and same_host and isinstance(pid, int) and not pid_alive(pid):
        status["state"] = RunState.CRASHED.value
    return status

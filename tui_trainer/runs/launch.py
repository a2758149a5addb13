"""Start a trainer as its own detached process, so closing the TUI or losing SSH does not stop it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tui_trainer.runs.layout import RunDir, create_run_dir
from tui_trainer.runs.status import RunState, write_status


def trainer_command(config_file: Path, run: RunDir, *, resume: bool = False) -> list[str]:
    """The command line of a trainer process writing into `run`."""
    command = [sys.executable, "-m", "tui_trainer.cli", "train", str(config_file), "--run-dir", str(run.path)]
    return [*command, "--resume", str(run.path)] if resume else command


def spawn_detached(command: list[str], run: RunDir, env: dict[str, str] | None = None) -> int:
    """Run `command` in a new session with stdout and stderr appended to the run's train.log; returns its pid."""
    with open(run.log_file, "ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
    write_status(run, state=RunState.STARTING, pid=process.pid)
    return process.pid


def launch_run(workspace_dir: str | Path, run_name: str, config_text: str, env: dict[str, str] | None = None) -> RunDir:
    """Create a run folder holding `config_text` and start its trainer detached; returns at once."""
    run = create_run_dir(workspace_dir, run_name, config_text)
    spawn_detached(trainer_command(run.config_file, run), run, env)
    return run


def resume_run(run: RunDir, env: dict[str, str] | None = None) -> int:
    """Start the trainer of an existing run again from its newest complete backup, detached."""
    return spawn_detached(trainer_command(run.config_file, run, resume=True), run, env)

"""Where everything of one run lives inside its folder."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from tui_trainer.atomic import atomic_write_text

RUNS_FOLDER = "runs"
TIMESTAMP_FORMAT = "%Y%m%d-%H%M%S"


@dataclass(frozen=True)
class RunDir:
    """One run folder: <workspace>/runs/<name>-<YYYYmmdd-HHMMSS>/."""

    path: Path

    @property
    def name(self) -> str:
        """Folder name of the run."""
        return self.path.name

    @property
    def config_file(self) -> Path:
        """The exact config the run started with."""
        return self.path / "config.toml"

    @property
    def status_file(self) -> Path:
        """Current state, pid and host (rewritten atomically)."""
        return self.path / "status.json"

    @property
    def events_file(self) -> Path:
        """Append-only JSON lines, one event each."""
        return self.path / "events.jsonl"

    @property
    def log_file(self) -> Path:
        """Human-readable log (trainer stdout and stderr)."""
        return self.path / "train.log"

    @property
    def commands_dir(self) -> Path:
        """Folder where viewers drop command files (sample, backup, save, stop)."""
        return self.path / "commands"

    @property
    def backups_dir(self) -> Path:
        """Complete backups only, one folder per step."""
        return self.path / "backups"

    @property
    def samples_dir(self) -> Path:
        """Sample images."""
        return self.path / "samples"

    @property
    def output_dir(self) -> Path:
        """Final and intermediate model files."""
        return self.path / "output"

    @property
    def tensorboard_dir(self) -> Path:
        """TensorBoard event files."""
        return self.path / "tensorboard"

    def exists(self) -> bool:
        """Whether this looks like a run folder (it has a config)."""
        return self.config_file.is_file()


def create_run_dir(workspace_dir: str | Path, run_name: str, config_text: str, now: float | None = None) -> RunDir:
    """Create a new run folder with its sub-folders and the config it starts with."""
    runs = Path(workspace_dir) / RUNS_FOLDER
    stamp = time.strftime(TIMESTAMP_FORMAT, time.localtime(now))
    path = runs / f"{run_name}-{stamp}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = runs / f"{run_name}-{stamp}-{suffix}"
    run = RunDir(path)
    for folder in (run.commands_dir, run.backups_dir, run.samples_dir, run.output_dir):
        folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.config_file, config_text)
    return run


DELETING_PREFIX = ".deleting-"
"""A run folder being deleted is first renamed to this hidden name, so no viewer lists it half-deleted."""


def list_runs(workspace_dir: str | Path) -> list[RunDir]:
    """Run folders of a workspace, newest first; hidden folders and folders that vanish meanwhile are skipped."""
    runs = Path(workspace_dir) / RUNS_FOLDER
    if not runs.is_dir():
        return []
    created: dict[Path, float] = {}
    for path in runs.iterdir():
        if path.name.startswith("."):
            continue
        try:
            created[path] = (path / "config.toml").stat().st_mtime
        except OSError:
            continue
    return [RunDir(path) for path in sorted(created, key=created.__getitem__, reverse=True)]


def delete_run(run: RunDir) -> None:
    """Delete a run folder: one atomic rename out of the list, then the files."""
    doomed = run.path.with_name(f"{DELETING_PREFIX}{run.name}-{time.time_ns()}")
    run.path.rename(doomed)
    shutil.rmtree(doomed)

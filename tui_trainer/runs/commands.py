"""Command files: a viewer drops RUN_DIR/commands/<name>; the trainer acts on it and deletes it."""

from __future__ import annotations

from enum import StrEnum

from tui_trainer.atomic import atomic_write_text
from tui_trainer.runs.layout import RunDir


class Command(StrEnum):
    """What a viewer can ask a running trainer to do."""

    SAMPLE = "sample"
    BACKUP = "backup"
    SAVE = "save"
    STOP = "stop"


def send_command(run: RunDir, command: Command | str) -> None:
    """Ask the trainer of `run` to do `command` within one step."""
    command = Command(command)
    run.commands_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.commands_dir / command.value, "")


def pending_commands(run: RunDir) -> list[Command]:
    """Commands waiting for the trainer, in a fixed order (stop last)."""
    if not run.commands_dir.is_dir():
        return []
    return [command for command in Command if (run.commands_dir / command.value).exists()]


def consume_command(run: RunDir, command: Command) -> None:
    """Delete a command file once acted on."""
    (run.commands_dir / command.value).unlink(missing_ok=True)

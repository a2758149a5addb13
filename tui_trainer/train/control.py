"""Live control of a running trainer: cadences, command files and signals, decided once per step for all processes.
Imports torch only when several processes share a decision (the launcher uses stop_signals without torch).

After every optimizer step the main process reads RUN_DIR/commands/ and the sample/backup/save cadences,
every process adds what its signal handler saw and whether its loss was finite, and one all-reduce (max)
makes every process act on the same set, so multi-process runs stop and back up at the same step.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tui_trainer.config import TrainConfig
from tui_trainer.config.enums import CadenceUnit
from tui_trainer.runs.commands import Command, consume_command, pending_commands
from tui_trainer.runs.layout import RunDir

if TYPE_CHECKING:
    import torch

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
IGNORED_SIGNALS = (signal.SIGHUP,)


@dataclass(frozen=True)
class Moment:
    """Where training is when a step ends."""

    step: int
    epochs_done: int
    """Completed epochs (1-based count), meaningful when `epoch_ended`."""
    epoch_ended: bool


CADENCE_DUE: dict[CadenceUnit, Callable[[int, Moment, float], bool]] = {
    CadenceUnit.STEPS: lambda every, moment, elapsed_s: moment.step % every == 0,
    CadenceUnit.EPOCHS: lambda every, moment, elapsed_s: moment.epoch_ended and moment.epochs_done % every == 0,
    CadenceUnit.MINUTES: lambda every, moment, elapsed_s: elapsed_s >= every * 60,
}
"""Whether an 'every N units' action is due at the end of a step."""


@dataclass
class Cadence:
    """One 'every N units' setting; `every` 0 is never."""

    every: int
    unit: CadenceUnit
    last: float = field(default_factory=time.monotonic)

    def due(self, moment: Moment) -> bool:
        """Whether the action is due now."""
        return bool(self.every) and CADENCE_DUE[self.unit](self.every, moment, time.monotonic() - self.last)

    def done(self) -> None:
        """The action ran (minutes count from here)."""
        self.last = time.monotonic()


ACTIONS = (Command.SAMPLE, Command.BACKUP, Command.SAVE, Command.STOP)
"""What a step can end with, in the order it is done."""


@dataclass(frozen=True)
class Decision:
    """What every process does after this step."""

    actions: tuple[Command, ...]
    bad_loss: bool


class Control:
    """Decides, after each step, what to do; only the main process touches command files."""

    def __init__(self, config: TrainConfig, run: RunDir, *, is_main: bool, num_processes: int, device: torch.device):
        self.run = run
        self.is_main = is_main
        self.num_processes = num_processes
        self.device = device
        self.cadences = {
            Command.SAMPLE: Cadence(config.sampling.every if config.samples else 0, config.sampling.unit),
            Command.BACKUP: Cadence(config.backup.every, config.backup.unit),
            Command.SAVE: Cadence(config.save.every, config.save.unit),
        }
        self.backup_before_save = config.backup.before_save
        self.signal: str | None = None
        self.commands: set[Command] = set()

    def request_stop(self, signum: int) -> None:
        """Signal handler side: only set a flag (no I/O in a handler)."""
        self.signal = signal.Signals(signum).name

    def decide(self, moment: Moment, loss_ok: bool) -> Decision:
        """The shared decision at the end of a step."""
        wanted: set[Command] = set()
        if self.is_main:
            self.commands = set(pending_commands(self.run))
            wanted = self.commands | {command for command, cadence in self.cadences.items() if cadence.due(moment)}
            if Command.SAVE in wanted and self.backup_before_save:
                wanted.add(Command.BACKUP)
        if self.signal is not None:
            wanted.add(Command.STOP)
        flags = [command in wanted for command in ACTIONS] + [not loss_ok]
        flags = self.any(flags)
        return Decision(tuple(command for command, flag in zip(ACTIONS, flags, strict=False) if flag), flags[-1])

    def any(self, flags: list[bool]) -> list[bool]:
        """Each flag OR-ed over all processes."""
        if self.num_processes == 1:
            return flags
        import torch

        tensor = torch.tensor([int(flag) for flag in flags], device=self.device)
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
        return [bool(value) for value in tensor.tolist()]

    def done(self, command: Command) -> None:
        """An action ran: delete its command file, restart its minutes."""
        if command in self.cadences:
            self.cadences[command].done()
        if self.is_main and command in self.commands:
            consume_command(self.run, command)


@contextlib.contextmanager
def stop_signals(on_stop: Callable[[int], None]) -> Iterator[None]:
    """SIGTERM and SIGINT call `on_stop(signum)`, SIGHUP is ignored; the old handlers come back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (*STOP_SIGNALS, *IGNORED_SIGNALS)}
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda signum, frame: on_stop(signum))
    for sig in IGNORED_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

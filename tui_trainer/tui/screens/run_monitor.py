"""The run screen: watch a run folder (events, status, log, samples) and drop command files into it.

Everything comes from the run folder on a timer, never from a pipe: quitting or losing SSH leaves the trainer alone.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual.worker import Worker, WorkerState

from tui_trainer.config import ConfigError, load_config
from tui_trainer.runs.commands import Command, send_command
from tui_trainer.runs.events import Event, ResumeEvent, StepEvent, UnknownEvent, ValidationEvent
from tui_trainer.runs.layout import RunDir
from tui_trainer.runs.status import TERMINAL_STATES, RunState
from tui_trainer.runs.summary import RunSummary, latest_samples, read_run_config, sample_prompts
from tui_trainer.runs.watch import RunUpdate, RunWatcher
from tui_trainer.tui.screens.confirm import ConfirmDialog
from tui_trainer.tui.terminal_alert import alert_terminal
from tui_trainer.tui.widgets.log_view import LogView
from tui_trainer.tui.widgets.loss_chart import LossChart
from tui_trainer.tui.widgets.run_header import RunHeader
from tui_trainer.tui.widgets.run_progress import RunProgress
from tui_trainer.tui.widgets.sample_view import SampleView
from tui_trainer.tui.workers import start_worker

POLL_S = 0.5
"""How often the run folder is read."""

EVENTS_PER_SLICE = 5000
"""Events folded between two looks at the keyboard (attaching to a long run reads its whole history)."""

TRAINING_STATES = frozenset({RunState.TRAINING, RunState.SAMPLING, RunState.SAVING})
LIVE_STATES = frozenset(RunState) - TERMINAL_STATES
ALERT_STATES = frozenset({RunState.FINISHED, RunState.FAILED, RunState.CRASHED})
"""End states the terminal alert ([notify] terminal) is sent for, when this screen saw the run live before."""

COMMAND_STATES: dict[Command, frozenset[RunState]] = {
    Command.SAMPLE: TRAINING_STATES,
    Command.BACKUP: TRAINING_STATES,
    Command.SAVE: TRAINING_STATES,
    Command.STOP: LIVE_STATES,
}
"""States in which each command makes sense; its key is disabled in the others."""

COMMAND_NOTES: dict[Command, str] = {
    Command.SAMPLE: "Asked the trainer for samples (within one step).",
    Command.BACKUP: "Asked the trainer for a backup (within one step).",
    Command.SAVE: "Asked the trainer to save the model (within one step).",
    Command.STOP: "Asked the trainer to stop: it backs up, saves and ends.",
}


class RunMonitorScreen(Screen[None]):
    """Live view of one run: header, progress, loss chart, latest samples, log, errors; keys send commands."""

    AUTO_FOCUS = "#run-log"
    DEFAULT_CSS = """
    RunMonitorScreen #run-main { height: 1fr; }
    RunMonitorScreen #run-log { height: 30%; min-height: 4; }
    RunMonitorScreen.-narrow #sample-view { width: 26; }
    RunMonitorScreen #error-panel { height: auto; border: round $error; color: $error; padding: 0 1; display: none; }
    RunMonitorScreen #error-panel.-shown { display: block; }
    """
    BINDINGS = [
        Binding("s", "command('sample')", "Sample", id="run.sample", tooltip="Sample now"),
        Binding("b", "command('backup')", "Backup", id="run.backup", tooltip="Backup now"),
        Binding("v", "command('save')", "Save", id="run.save", tooltip="Save the model now"),
        Binding("x", "command('stop')", "Stop", id="run.stop", tooltip="Stop: backup, save, end"),
        Binding("d", "detach", "Detach", id="run.detach", tooltip="Leave; training goes on"),
        Binding("o", "folder", "Folder", id="run.folder", tooltip="Show the run folder path"),
        Binding("r", "runs", "Runs", id="run.runs", tooltip="Runs of this workspace"),
    ]

    class ShowRuns(Message):
        """The user asked for the runs list of `workspace` (the app owns the navigation between run screens)."""

        def __init__(self, workspace: Path) -> None:
            super().__init__()
            self.workspace = workspace

    def __init__(self, run: RunDir, *, poll_interval: float = POLL_S) -> None:
        super().__init__()
        self.run = run
        self.poll_interval = poll_interval
        self.watcher = RunWatcher(run)
        self.summary = RunSummary()
        self.state = RunState.STARTING.value
        self.pending: set[Command] = set()
        self.estimate_bytes: int | None = None
        run_config = read_run_config(run)
        self.prompts = sample_prompts(run_config)
        notify = run_config.get("notify")
        self.terminal_alert = not isinstance(notify, dict) or notify.get("terminal", True) is not False
        self.alerts: list[str] = []
        """The terminal alerts this screen sent."""
        self.polls = 0
        self._polling = False
        self._samples_seen = 0
        self._unknown_seen: set[tuple[str, frozenset[str]]] = set()

    def compose(self) -> ComposeResult:
        yield RunHeader(id="run-header")
        yield RunProgress(id="run-progress")
        yield Static("", id="error-panel")
        with Horizontal(id="run-main"):
            yield LossChart(id="loss-chart")
            yield SampleView(id="sample-view")
        yield LogView(id="run-log")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(RunHeader).show(self.run.name, self.state, self.summary, None, None)
        self.set_interval(self.poll_interval, self.poll)
        self.call_later(self.poll)
        start_worker(self, self._estimate, what="VRAM estimate", group="estimate", thread=True)

    def _estimate(self) -> int | None:
        estimate = getattr(getattr(self.app, "services", None), "estimate", None)
        if estimate is None:
            return None
        try:
            config = load_config(self.run.config_file)
        except ConfigError:
            return None  # the header shows no estimate; the trainer reports the config's problems itself
        return estimate(config, None).total_bytes

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "estimate" and event.state is WorkerState.SUCCESS:
            self.estimate_bytes = event.worker.result

    async def poll(self) -> None:
        """Read what is new in the run folder (in a thread) and show it."""
        if self._polling:
            return
        self._polling = True
        try:
            update = await asyncio.to_thread(self.watcher.poll)
            await self.apply(update)
        finally:
            self._polling = False

    async def apply(self, update: RunUpdate) -> None:
        """Show one look at the run folder."""
        chart, notes = self.query_one(LossChart), []
        for start in range(0, len(update.events), EVENTS_PER_SLICE):
            for event in update.events[start:start + EVENTS_PER_SLICE]:
                self.summary.apply(event)
                if isinstance(event, StepEvent) and event.loss is not None:
                    chart.add(event.step, event.loss, event.smoothed_loss)
                elif isinstance(event, ValidationEvent) and event.loss is not None:
                    chart.add_validation(event.step, event.loss)
                elif isinstance(event, ResumeEvent):
                    chart.truncate(event.step)
                notes += self._unknown_note(event)
            await asyncio.sleep(0)
        chart.redraw()
        self.query_one(LogView).add_lines(notes + update.log_lines)
        state, pending = str(update.status.get("state", self.state)), set(update.pending)
        if state != self.state and state in ALERT_STATES and self.state in LIVE_STATES and self.polls:
            self._alert(state)
        if state != self.state or pending != self.pending:
            self.state, self.pending = state, pending
            self.refresh_bindings()
        self._show_status()
        view = self.query_one(SampleView)
        if update.samples_changed or len(self.summary.sample_events) != self._samples_seen or view.failed:
            self._samples_seen = len(self.summary.sample_events)
            await view.show(latest_samples(self.run, self.summary, self.prompts))
        self.polls += 1

    def _alert(self, state: str) -> None:
        """Bell and desktop notification (unless the run's notify.terminal is false)."""
        if not self.terminal_alert:
            return
        error = self.summary.error
        body = f"{state} at step {self.summary.step or 0}" + (f": {error.message}" if error is not None else "")
        text = alert_terminal(self.app, f"tui-trainer {self.run.name}", body)
        if text is not None:
            self.alerts.append(text)

    def _unknown_note(self, event: Event) -> list[str]:
        """What a newer trainer wrote that this viewer does not know, as a log line: every event of an unknown kind,
        and the first event of a known kind with each new set of unknown fields."""
        text = event.unknown_text()
        if text is None or isinstance(event, UnknownEvent):
            return [] if text is None else [text]
        seen = (event.type, frozenset(event.extra))
        if seen in self._unknown_seen:
            return []
        self._unknown_seen.add(seen)
        return [text]

    def _elapsed(self) -> float | None:
        try:
            created = self.run.config_file.stat().st_mtime
        except OSError:
            return None
        started = min(created, self.summary.first_time or created)
        end = (self.summary.last_time or started) if self.state in TERMINAL_STATES else time.time()
        return end - started

    def _show_status(self) -> None:
        self.query_one(RunHeader).show(self.run.name, self.state, self.summary, self._elapsed(), self.estimate_bytes)
        self.query_one(RunProgress).show(self.state, self.summary)
        panel = self.query_one("#error-panel", Static)
        text = self.problem_text()
        panel.set_class(text is not None, "-shown")
        if text is not None and str(panel.content) != text:
            panel.update(text)

    def problem_text(self) -> str | None:
        """The error panel's text: the `error` event (message and hint), or a crash note; None when all is well."""
        error = self.summary.error
        if error is not None:
            return f"error: {error.message}" + (f"\nhint: {error.hint}" if error.hint else "")
        if self.state == RunState.CRASHED:
            return ("crashed: the trainer stopped without a final state (killed, or the machine restarted).\n"
                    "hint: resume it from its last backup in the runs list (r, then r on the run).")
        return None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action != "command":
            return True
        command = Command(str(parameters[0]))
        if self.state not in COMMAND_STATES[command] or command in self.pending:
            return None
        return True

    def action_command(self, name: str) -> None:
        """Drop a command file for the trainer (stop asks first)."""
        command = Command(name)
        if command is Command.STOP:
            self.app.push_screen(
                ConfirmDialog(f"Stop {self.run.name}? The trainer makes a backup, saves the model and ends.",
                              {"stop": "Stop", "cancel": "Keep training"}),
                self._stop_answered,
            )
            return
        self._send(command)

    def _stop_answered(self, answer: str | None) -> None:
        if answer == "stop" and self.state in LIVE_STATES:
            self._send(Command.STOP)

    def _send(self, command: Command) -> None:
        send_command(self.run, command)
        self.pending.add(command)
        self.refresh_bindings()
        self.notify(COMMAND_NOTES[command], title=command.value)

    def action_detach(self) -> None:
        """Leave this screen; the trainer goes on (in `tui-trainer attach`, quit)."""
        if len(self.app.screen_stack) > 2:
            self.dismiss()
            return
        self.app.exit(message=f"Detached from {self.run.name}; training goes on.\nWatch it again: "
                              f"tui-trainer attach {self.run.path}")

    def action_folder(self) -> None:
        """Show the run folder's path (and copy it to the clipboard)."""
        self.app.copy_to_clipboard(str(self.run.path))
        self.notify(str(self.run.path), title="Run folder (copied)", timeout=10)

    def action_runs(self) -> None:
        """The runs of this run's workspace (the app shows them)."""
        self.post_message(self.ShowRuns(self.run.path.parent.parent))

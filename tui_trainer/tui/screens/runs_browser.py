"""The runs of a workspace: attach, resume (optionally with more epochs), edit the config, delete."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from tui_trainer.config import ConfigError, load_config, save_config
from tui_trainer.runs.launch import resume_run
from tui_trainer.runs.layout import RUNS_FOLDER, RunDir, delete_run, list_runs
from tui_trainer.runs.queue import EntryState, QueueEntry, RunQueue
from tui_trainer.runs.status import RunState
from tui_trainer.runs.summary import RunListing, summarize_run
from tui_trainer.tui.screens.confirm import ConfirmDialog
from tui_trainer.tui.screens.queue import QueueScreen
from tui_trainer.tui.screens.resume_dialog import ResumeDialog
from tui_trainer.tui.screens.run_monitor import RunMonitorScreen
from tui_trainer.units import format_duration

REFRESH_S = 2.0
"""How often the list is re-read."""

RESUMABLE_STATES = frozenset({RunState.FINISHED, RunState.CRASHED, RunState.STOPPED, RunState.FAILED})

RUN_ACTIONS: dict[str, Callable[[RunListing], bool]] = {
    "attach": lambda listing: True,
    "edit": lambda listing: True,
    "resume": lambda listing: listing.state in RESUMABLE_STATES,
    "delete": lambda listing: not listing.live,
}
"""Actions on the selected run, and when each is allowed (the key is disabled otherwise)."""

COLUMNS = ("Run", "Model", "State", "Step", "Loss", "Started", "Duration")


def listing_row(listing: RunListing) -> tuple[str, ...]:
    """The table cells of one run."""
    step = f"{listing.step}/{listing.total_steps}" if listing.total_steps else str(listing.step)
    loss = f"{listing.last_loss:.4f}" if listing.last_loss is not None else "-"
    started = time.strftime("%m-%d %H:%M", time.localtime(listing.started_at))
    return (listing.run.name, f"{listing.family}/{listing.method}", listing.state, step, loss, started,
            format_duration(listing.duration_s))


def queued_row(position: int, entry: QueueEntry) -> tuple[str, ...]:
    """The table cells of a pending queue entry (it has no run folder yet)."""
    added = time.strftime("%m-%d %H:%M", time.localtime(entry.added_at))
    return (entry.name, "-", f"queued #{position}", "-", "-", added, "-")


def pending_entries(workspace: Path) -> list[tuple[int, QueueEntry]]:
    """The workspace queue's pending entries with their positions."""
    entries = RunQueue(workspace).entries()
    return [(position, entry) for position, entry in enumerate(entries, start=1) if entry.state is EntryState.PENDING]


class RunsBrowserScreen(Screen[None]):
    """A table of runs, newest first, refreshed every few seconds."""

    AUTO_FOCUS = "#runs-table"
    DEFAULT_CSS = """
    RunsBrowserScreen #runs-title { height: 1; background: $panel; padding: 0 1; }
    RunsBrowserScreen #runs-table { height: 1fr; }
    RunsBrowserScreen #runs-empty { color: $text-muted; padding: 1 2; }
    """
    BINDINGS = [
        Binding("a", "attach", "Attach", id="runs.attach", tooltip="Watch the run (Enter too)"),
        Binding("r", "resume", "Resume", id="runs.resume"),
        Binding("e", "edit", "Edit config", id="runs.edit"),
        Binding("delete", "delete", "Delete", id="runs.delete"),
        Binding("q", "queue", "Queue", id="runs.queue", tooltip="The run queue of this workspace"),
        Binding("escape", "back", "Back", id="runs.back"),
    ]

    def __init__(self, workspace: str | Path, *, refresh_interval: float = REFRESH_S) -> None:
        super().__init__()
        self.workspace = Path(workspace)
        self.refresh_interval = refresh_interval
        self.listings: dict[str, RunListing] = {}
        self.queued: dict[str, tuple[str, ...]] = {}
        """Rows of the pending queue entries (listed first), by row key."""
        self.columns: list = []
        self.loaded = False
        self._refreshing = False

    def compose(self) -> ComposeResult:
        yield Static(f"tui-trainer  runs in {self.workspace / RUNS_FOLDER}", id="runs-title")
        yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="runs-empty")
        yield Footer()

    def on_mount(self) -> None:
        self.columns = self.query_one(DataTable).add_columns(*COLUMNS)
        self.set_interval(self.refresh_interval, self.reload)
        self.call_later(self.reload)

    async def on_screen_resume(self) -> None:
        await self.reload()

    async def reload(self) -> None:
        """Re-read every run's status and events (in a thread) and redraw the table."""
        if self._refreshing:
            return
        self._refreshing = True
        try:
            listings, queued = await asyncio.to_thread(lambda: (
                [summarize_run(run) for run in list_runs(self.workspace)], pending_entries(self.workspace)))
        finally:
            self._refreshing = False
        self._show(listings, {f"queue:{entry.id}": queued_row(position, entry) for position, entry in queued})

    def _show(self, listings: list[RunListing], queued: dict[str, tuple[str, ...]] | None = None) -> None:
        table = self.query_one(DataTable)
        queued = queued or {}
        rows = queued | {str(listing.run.path): listing_row(listing) for listing in listings}
        previous = self.queued | {key: listing_row(listing) for key, listing in self.listings.items()}
        if self.loaded and rows == previous:
            self.listings = {str(listing.run.path): listing for listing in listings}
            return
        if list(rows) == list(previous):
            for key, cells in rows.items():
                for column, (old, new) in enumerate(zip(previous[key], cells, strict=True)):
                    if old != new:
                        table.update_cell(key, self.columns[column], new)
        else:
            selected = self.selected
            table.clear()
            for key, cells in rows.items():
                table.add_row(*cells, key=key)
            if selected is not None and str(selected.run.path) in rows:
                table.move_cursor(row=table.get_row_index(str(selected.run.path)), animate=False)
        self.queued = queued
        self.listings = {str(listing.run.path): listing for listing in listings}
        empty = f"No runs in {self.workspace / RUNS_FOLDER} yet. Start one from the editor (ctrl+r)."
        self.query_one("#runs-empty", Static).update("" if rows else empty)
        self.loaded = True
        self.refresh_bindings()

    @property
    def selected(self) -> RunListing | None:
        """The run under the cursor."""
        table = self.query_one(DataTable)
        if not self.listings or table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self.listings.get(str(key))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.refresh_bindings()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if str(event.row_key.value) in self.queued:
            self.action_queue()
        else:
            self.action_attach()

    def action_queue(self) -> None:
        """The run queue of this workspace."""
        self.app.push_screen(QueueScreen(self.workspace))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "back":
            return len(self.app.screen_stack) > 2
        allowed = RUN_ACTIONS.get(action)
        if allowed is None:
            return True
        listing = self.selected
        return True if listing is not None and allowed(listing) else None

    def action_attach(self) -> None:
        """Watch the selected run."""
        listing = self.selected
        if listing is not None:
            self.app.push_screen(RunMonitorScreen(listing.run))

    def action_edit(self) -> None:
        """Open the selected run's config in the editor."""
        listing = self.selected
        if listing is not None:
            self.app.open_file(listing.run.config_file)

    def action_back(self) -> None:
        """Back to the previous screen."""
        self.dismiss()

    def action_resume(self) -> None:
        """Resume the selected (finished, stopped, failed or crashed) run, asking for its total epochs."""
        listing = self.selected
        if listing is None or not RUN_ACTIONS["resume"](listing):
            return
        self.app.push_screen(ResumeDialog(listing.run.name, listing.epochs or 1, listing.step),
                             lambda epochs: self._resume(listing.run, epochs))

    def _resume(self, run: RunDir, epochs: int | None) -> None:
        if epochs is None:
            return
        try:
            config = load_config(run.config_file)
        except ConfigError as error:
            self.notify("\n".join(str(problem) for problem in error.problems), severity="error", title="Not resumed")
            return
        if epochs != config.training.epochs:
            config.training.epochs = epochs
            save_config(config, run.config_file)
            if config.training.max_steps is not None:
                self.notify(f"training.max_steps = {config.training.max_steps} still caps the run",
                            severity="warning", title="Resume")
        try:
            resume_run(run)
        except OSError as error:
            self.notify(str(error), severity="error", title="Not resumed")
            return
        self.app.push_screen(RunMonitorScreen(run))

    def action_delete(self) -> None:
        """Delete the selected run's folder after confirmation (never a live run)."""
        listing = self.selected
        if listing is None or not RUN_ACTIONS["delete"](listing):
            return
        self.app.push_screen(
            ConfirmDialog(f"Delete {listing.run.name} and everything in it (backups, samples, outputs)?",
                          {"delete": "Delete", "cancel": "Cancel"}),
            lambda answer: self._delete(listing.run, answer),
        )

    async def _delete(self, run: RunDir, answer: str | None) -> None:
        if answer != "delete":
            return
        if summarize_run(run).live:
            self.notify(f"{run.name} is running; stop it first", severity="error", title="Not deleted")
            return
        await asyncio.to_thread(delete_run, run)
        self.notify(f"Deleted {run.path}", title="Deleted")
        await self.reload()

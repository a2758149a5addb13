"""The run queue of a workspace: add the open config, reorder, remove, pause, start the runner, open a run."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from tui_trainer.config import ConfigError, dump_config, with_absolute_paths
from tui_trainer.models.problems import load_checked_config
from tui_trainer.runs.layout import RunDir
from tui_trainer.runs.queue import EntryState, QueueEntry, QueueError, RunQueue, detach_runner
from tui_trainer.tui.screens.run_monitor import RunMonitorScreen

REFRESH_S = 2.0
"""How often the queue is re-read."""

COLUMNS = {"#": 3, "Entry": 22, "Name": 20, "State": 8, "Run folder / config": None}
"""Column labels and widths (None: as wide as its cells)."""

ENTRY_ACTIONS: dict[str, Callable[[QueueEntry], bool]] = {
    "move(-1)": lambda entry: True,
    "move(1)": lambda entry: True,
    "remove": lambda entry: entry.state is not EntryState.RUNNING,
    "open_run": lambda entry: entry.run is not None,
}
"""Actions on the selected entry, and when each is allowed (the key is disabled otherwise)."""


def entry_row(position: int, entry: QueueEntry) -> tuple[str, ...]:
    """The table cells of one entry."""
    return (str(position), entry.id, entry.name, entry.state.value, entry.run or entry.source)


class QueueScreen(Screen[None]):
    """A table of the queue's entries in order, refreshed every few seconds."""

    AUTO_FOCUS = "#queue-table"
    DEFAULT_CSS = """
    QueueScreen #queue-title { height: 1; background: $panel; padding: 0 1; }
    QueueScreen #queue-table { height: 1fr; }
    QueueScreen #queue-empty { color: $text-muted; padding: 1 2; }
    """
    BINDINGS = [
        Binding("a", "add", "Add open config", id="queue.add"),
        Binding("[", "move(-1)", "Up", id="queue.up"),
        Binding("]", "move(1)", "Down", id="queue.down"),
        Binding("delete", "remove", "Remove", id="queue.remove"),
        Binding("p", "pause", "Pause/resume", id="queue.pause"),
        Binding("g", "start_runner", "Run queue", id="queue.run", tooltip="Start the queue runner, detached"),
        Binding("enter", "open_run", "Open run", id="queue.open", show=False),
        Binding("escape", "back", "Back", id="queue.back"),
    ]

    def __init__(self, workspace: str | Path, config_path: str | Path | None = None, *, refresh_interval: float = REFRESH_S) -> None:
        super().__init__()
        self.queue = RunQueue(workspace)
        self.config_path = Path(config_path) if config_path else None
        self.refresh_interval = refresh_interval
        self.entries: list[QueueEntry] = []
        self.runner_pid: int | None = None
        self.loaded = False

    def compose(self) -> ComposeResult:
        yield Static("", id="queue-title")
        yield DataTable(id="queue-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="queue-empty")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for label, width in COLUMNS.items():
            table.add_column(label, width=width)
        self.set_interval(self.refresh_interval, self.reload)
        self.call_later(self.reload)

    async def reload(self) -> None:
        """Re-read the queue (in a thread) and redraw."""
        entries, pid = await asyncio.to_thread(lambda: (self.queue.entries(), self.queue.runner_pid()))
        self._show(entries, pid)

    def _show(self, entries: list[QueueEntry], pid: int | None) -> None:
        table = self.query_one(DataTable)
        rows = [entry_row(position, entry) for position, entry in enumerate(entries, start=1)]
        previous = [entry_row(position, entry) for position, entry in enumerate(self.entries, start=1)]
        self.runner_pid = pid
        runner = f"runner pid {pid}" if pid else "no runner (g starts one)"
        self.query_one("#queue-title", Static).update(
            f"tui-trainer  queue of {self.queue.workspace}  " + ("paused, " if self.queue.paused else "") + runner)
        if not self.loaded or rows != previous:
            selected = self.selected
            table.clear()
            for cells in rows:
                table.add_row(*cells, key=cells[1])
            if selected is not None and selected.id in {entry.id for entry in entries}:
                table.move_cursor(row=table.get_row_index(selected.id), animate=False)
        self.entries = entries
        empty = "The queue is empty." + (" a adds the open config." if self.config_path else "")
        self.query_one("#queue-empty", Static).update("" if entries else empty)
        self.loaded = True
        self.refresh_bindings()

    @property
    def selected(self) -> QueueEntry | None:
        """The entry under the cursor."""
        table = self.query_one(DataTable)
        if not self.entries or table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((entry for entry in self.entries if entry.id == key), None)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.refresh_bindings()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open_run()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "back":
            return len(self.app.screen_stack) > 2
        if action == "add":
            return True if self.config_path is not None else None
        if action == "start_runner":
            return True if self.runner_pid is None else None
        key = f"{action}({parameters[0]})" if parameters else action
        allowed = ENTRY_ACTIONS.get(key)
        if allowed is None:
            return True
        entry = self.selected
        return True if entry is not None and allowed(entry) else None

    async def _change(self, change: Callable[[], object], done: str) -> None:
        try:
            change()
        except (QueueError, OSError) as error:
            self.notify(str(error), severity="error", title="Queue")
            return
        self.notify(done, title="Queue")
        await self.reload()

    async def action_add(self) -> None:
        """Append the open config (as saved on disk) to the queue."""
        path = self.config_path
        if path is None:
            return
        try:
            config = load_checked_config(path)
        except ConfigError as error:
            self.notify("\n".join(str(problem) for problem in error.problems), severity="error", title="Not queued")
            return
        text = dump_config(with_absolute_paths(config, path))
        await self._change(lambda: self.queue.add(text, config.workspace.run_name, path.resolve()), f"Queued {path.name}")

    async def action_move(self, offset: int) -> None:
        """Move the selected entry up (-1) or down (+1)."""
        entry = self.selected
        if entry is None:
            return
        position = self.entries.index(entry) + 1 + offset
        if 1 <= position <= len(self.entries):
            await self._change(lambda: self.queue.move(entry.id, position), f"{entry.name} is now #{position}")
            self.query_one(DataTable).move_cursor(row=position - 1, animate=False)

    async def action_remove(self) -> None:
        """Take the selected entry out of the queue (its run folder stays)."""
        entry = self.selected
        if entry is not None:
            await self._change(lambda: self.queue.remove(entry.id), f"Removed {entry.name} ({entry.id})")

    async def action_pause(self) -> None:
        """Pause the queue (the running entry goes on), or resume it."""
        if self.queue.paused:
            await self._change(self.queue.resume, "Resumed")
        else:
            await self._change(self.queue.pause, "Paused: the runner starts no further entry")

    async def action_start_runner(self) -> None:
        """Start the queue runner detached: it goes on when the app closes."""
        await self._change(lambda: detach_runner(self.queue), f"Queue runner started; log in {self.queue.folder / 'runner.log'}")

    def action_open_run(self) -> None:
        """Watch the selected entry's run."""
        entry = self.selected
        if entry is not None and entry.run is not None:
            self.app.push_screen(RunMonitorScreen(RunDir(Path(entry.run))))

    def action_back(self) -> None:
        """Back to the previous screen."""
        self.dismiss()


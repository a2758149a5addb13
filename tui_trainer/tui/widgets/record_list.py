"""An editable list of records (concepts, samples): add, edit, remove, enable and reorder by keyboard."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from pydantic import BaseModel
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Static

Column = tuple[str, Callable[[Any], str]]
RecordDialogFactory = Callable[[str, BaseModel], Screen[BaseModel | None]]
"""(title, record) -> a screen that edits a copy of the record and dismisses with it (None = cancelled)."""


class RecordList(Vertical):
    """A table of records with keys to change the list; asks the screen `dialog` makes for a record's fields."""

    BINDINGS = [
        Binding("a", "add", "Add", id="records.add"),
        Binding("e", "edit", "Edit", id="records.edit"),
        Binding("x,delete", "remove", "Remove", id="records.remove"),
        Binding("space", "toggle", "On/off", id="records.toggle"),
        Binding("shift+up", "move(-1)", "Move up", id="records.move_up"),
        Binding("shift+down", "move(1)", "Move down", id="records.move_down"),
    ]

    class Changed(Message):
        """The list changed (the new list is in `records`)."""

        def __init__(self, record_list: RecordList, records: list[BaseModel]) -> None:
            super().__init__()
            self.record_list = record_list
            self.key = record_list.key
            self.records = records

        @property
        def control(self) -> RecordList:
            return self.record_list

    def __init__(self, key: str, model: type[BaseModel], records: Sequence[BaseModel], columns: Sequence[Column],
                 new_record: Callable[[int], BaseModel], *, dialog: RecordDialogFactory, empty_hint: str,
                 id: str | None = None) -> None:
        super().__init__(id=id, classes="record-list")
        self.key = key
        self.model = model
        self.records = list(records)
        self.columns = list(columns)
        self.new_record = new_record
        self.dialog = dialog
        self.empty_hint = empty_hint

    def compose(self) -> ComposeResult:
        table: DataTable[str] = DataTable(cursor_type="row", zebra_stripes=True)
        table.add_columns(*(title for title, _ in self.columns))
        yield table
        yield Static(self.empty_hint, classes="record-hint")

    def on_mount(self) -> None:
        self._fill()

    @property
    def table(self) -> DataTable[str]:
        """The table of records."""
        return self.query_one(DataTable)

    def _fill(self, cursor: int | None = None) -> None:
        table = self.table
        table.clear()
        for record in self.records:
            table.add_row(*(render(record) for _, render in self.columns))
        self.query_one(".record-hint", Static).display = not self.records
        if cursor is not None and self.records:
            table.move_cursor(row=max(0, min(cursor, len(self.records) - 1)))

    def _commit(self, records: list[BaseModel], cursor: int) -> None:
        self.records = records
        self._fill(cursor)
        self.post_message(self.Changed(self, list(records)))

    @property
    def _cursor(self) -> int | None:
        return self.table.cursor_row if self.records else None

    def action_add(self) -> None:
        draft = self.new_record(len(self.records))
        self.app.push_screen(self.dialog(f"New {self.key.rstrip('s')}", draft), partial(self._put, None))

    def action_edit(self) -> None:
        index = self._cursor
        if index is None:
            return
        self.app.push_screen(self.dialog(f"Edit {self.key.rstrip('s')} {index + 1}", self.records[index]),
                             partial(self._put, index))

    def _put(self, index: int | None, record: BaseModel | None) -> None:
        """Store a dialog's record at `index` (None = append); a cancelled dialog changes nothing."""
        if record is None:
            return
        if index is None:
            self._commit([*self.records, record], len(self.records))
        else:
            self._commit([*self.records[:index], record, *self.records[index + 1:]], index)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_edit()

    def action_remove(self) -> None:
        index = self._cursor
        if index is not None:
            self._commit([*self.records[:index], *self.records[index + 1:]], index)

    def action_toggle(self) -> None:
        index = self._cursor
        if index is None or "enabled" not in self.model.model_fields:
            return
        record = self.records[index]
        changed = record.model_copy(update={"enabled": not record.enabled})
        self._commit([*self.records[:index], changed, *self.records[index + 1:]], index)

    def action_move(self, offset: int) -> None:
        index = self._cursor
        target = (index or 0) + offset
        if index is None or not 0 <= target < len(self.records):
            return
        records = list(self.records)
        records[index], records[target] = records[target], records[index]
        self._commit(records, target)

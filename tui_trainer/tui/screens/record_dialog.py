"""A dialog editing one record (a concept or a sample) field by field; Enter accepts, Escape cancels."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.widgets import Button, Input, Static

from tui_trainer.config.errors import problems_from_validation
from tui_trainer.tui.screens.dialog import Dialog
from tui_trainer.tui.widgets.field_editor import FieldEditor
from tui_trainer.tui.widgets.field_group import editable_fields
from tui_trainer.tui.widgets.help_bar import HelpBar

DIALOG_HELP = "Tab / Shift+Tab move between fields; Enter in a text field or Ctrl+S accepts; Escape cancels."


class RecordDialog(Dialog[BaseModel | None]):
    """Edit `record`'s fields; dismiss with the validated record, or None."""

    AUTO_FOCUS = ".field-editor"
    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="dialog.cancel"),
        Binding("ctrl+s", "accept", "OK", id="dialog.accept", priority=True),
    ]

    def __init__(self, title: str, record: BaseModel) -> None:
        super().__init__()
        self.title_text = title
        self.record = record
        self.values: dict[str, Any] = record.model_dump()
        self.rejected: dict[str, str] = {}

    def compose_body(self) -> ComposeResult:
        with Vertical(classes="dialog-body") as body:
            body.border_title = self.title_text
            with VerticalScroll(classes="dialog-fields"):
                for name in editable_fields(type(self.record)):
                    yield FieldEditor(name, self.record, name, id=f"record-{name}")
            yield HelpBar(DIALOG_HELP, id="dialog-help")
            yield Static("", id="dialog-problems")
            with Horizontal(classes="dialog-buttons"):
                yield Button("OK", id="ok", variant="primary", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    def on_field_editor_changed(self, event: FieldEditor.Changed) -> None:
        event.stop()
        if event.reason is None:
            self.values[event.key] = event.value
            self.rejected.pop(event.key, None)
        else:
            self.rejected[event.key] = event.reason

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        try:
            help_text = event.widget.query_ancestor(FieldEditor).help_text
        except NoMatches:
            help_text = None
        self.query_one(HelpBar).show(help_text)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_accept()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "ok":
            self.action_accept()
        else:
            self.action_cancel()

    def action_accept(self) -> None:
        """Validate the whole record; close with it, or list what is wrong."""
        problems = [f"{key}: {reason}" for key, reason in self.rejected.items()]
        record = None
        if not problems:
            try:
                record = type(self.record).model_validate(self.values)
            except ValidationError as error:
                problems = [str(p) for p in problems_from_validation(type(self.record), error, "")]
        if record is None:
            self.query_one("#dialog-problems", Static).update("\n".join(problems))
            return
        self.dismiss(record)

    def action_cancel(self) -> None:
        """Close without changes."""
        self.dismiss(None)

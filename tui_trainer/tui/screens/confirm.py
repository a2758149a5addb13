"""A yes/no/cancel question answered by keyboard."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Static

from tui_trainer.tui.screens.dialog import Dialog


class ConfirmDialog(Dialog[str]):
    """Ask a question; dismiss with the id of the chosen answer ('cancel' on Escape)."""

    BINDINGS = [Binding("escape", "dismiss('cancel')", "Cancel", id="dialog.cancel")]

    def __init__(self, question: str, answers: dict[str, str]) -> None:
        super().__init__()
        self.question = question
        self.answers = answers

    def compose_body(self) -> ComposeResult:
        with Vertical(classes="dialog-body dialog-small"):
            yield Static(self.question, id="question")
            with Horizontal(classes="dialog-buttons"):
                for answer, label in self.answers.items():
                    yield Button(label, id=answer, compact=True)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id or "cancel")

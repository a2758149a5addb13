"""A list of config problems (for a load that failed); the current state is kept."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Button, Static

from tui_trainer.tui.screens.dialog import Dialog


class ProblemsDialog(Dialog[None]):
    """Show problems; any key in the bindings closes it."""

    BINDINGS = [Binding("escape,enter", "dismiss(None)", "Close", id="dialog.close")]

    def __init__(self, title: str, problems: list[str]) -> None:
        super().__init__()
        self.title_text = title
        self.problems = problems

    def compose_body(self) -> ComposeResult:
        with Vertical(classes="dialog-body") as body:
            body.border_title = self.title_text
            with VerticalScroll(classes="dialog-fields"):
                yield Static("\n".join(f"• {problem}" for problem in self.problems), id="problems")
            yield Button("Close", id="close", compact=True)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(None)

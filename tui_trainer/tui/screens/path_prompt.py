"""Ask for a file path (Save As, Open)."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Input, Static

from tui_trainer.tui.screens.dialog import Dialog
from tui_trainer.tui.widgets.ordered_input import OrderedInput


class PathPrompt(Dialog[Path | None]):
    """Type a path and press Enter; Escape cancels."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel", id="dialog.cancel")]

    def __init__(self, title: str, initial: str = "", *, must_exist: bool = False) -> None:
        super().__init__()
        self.title_text = title
        self.initial = initial
        self.must_exist = must_exist

    def compose_body(self) -> ComposeResult:
        with Vertical(classes="dialog-body dialog-small") as body:
            body.border_title = self.title_text
            yield OrderedInput(self.initial, placeholder="path/to/config.toml", id="path", compact=True)
            yield Static("Enter to confirm, Escape to cancel", id="path-problem")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value.strip()
        path = Path(text).expanduser() if text else None
        if path is None or (self.must_exist and not path.is_file()) or path.is_dir():
            self.query_one("#path-problem", Static).update(f"{text or 'an empty path'}: not a file; type another path")
            return
        self.dismiss(path)

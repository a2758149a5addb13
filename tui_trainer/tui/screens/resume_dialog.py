"""Ask how many epochs a resumed run should have in total (more than before continues a finished run)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Input, Static

from tui_trainer.tui.screens.dialog import Dialog
from tui_trainer.tui.widgets.ordered_input import OrderedInput


class ResumeDialog(Dialog[int | None]):
    """Type the total epochs and press Enter; Escape cancels."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel", id="dialog.cancel")]

    def __init__(self, run_name: str, epochs: int, step: int) -> None:
        super().__init__()
        self.run_name = run_name
        self.epochs = epochs
        self.step = step

    def compose_body(self) -> ComposeResult:
        with Vertical(classes="dialog-body dialog-small") as body:
            body.border_title = f"Resume {self.run_name}"
            yield Static(f"Stopped at step {self.step} of {self.epochs} epochs. Total epochs after resuming:")
            yield OrderedInput(str(self.epochs), type="integer", id="resume-epochs", compact=True)
            yield Static("Enter resumes from the last complete backup, Escape cancels", id="resume-problem")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value.strip()
        if not text.isdigit() or int(text) < self.epochs:
            self.query_one("#resume-problem", Static).update(f"{text or 'nothing'}: type a whole number >= {self.epochs}")
            return
        self.dismiss(int(text))

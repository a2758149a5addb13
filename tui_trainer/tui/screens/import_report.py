"""The report of an import: what each source key became, and what to check, shown over the converted config."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Button, Static

from tui_trainer.config.importing import ImportReport
from tui_trainer.tui.screens.dialog import Dialog


class ImportReportDialog(Dialog[None]):
    """Warnings first, then every source key by outcome; closing shows the editor on the converted config."""

    BINDINGS = [Binding("escape,enter", "dismiss(None)", "Edit the converted config", id="dialog.close")]

    def __init__(self, report: ImportReport) -> None:
        super().__init__()
        self.report = report

    def compose_body(self) -> ComposeResult:
        with Vertical(classes="dialog-body") as body:
            body.border_title = f"Imported {Path(self.report.source).name}"
            yield Static(f"{self.report.kind}: {self.report.summary()}.\nNothing is saved yet: Save (Ctrl+S) asks for a "
                         "new .toml; the source file is never written.", id="import-summary")
            with VerticalScroll(classes="dialog-fields"):
                yield Static(self.report.format().split("\n", 1)[1], id="import-report", markup=False)
            yield Button("Edit the converted config", id="close", compact=True)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(None)

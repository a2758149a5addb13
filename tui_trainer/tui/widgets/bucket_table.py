"""Buckets: the dataset report per aspect-ratio bucket, built in a thread worker so the UI never waits."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.timer import Timer
from textual.widgets import DataTable, Static
from textual.worker import Worker, WorkerState

from tui_trainer.config import TrainConfig
from tui_trainer.tui.workers import start_worker

DEBOUNCE_S = 0.15
COLUMNS = (("WxH", 9), ("img", 5), ("bat", 4), ("±", 4))
"""Column labels and fixed widths (auto widths would depend on when the first rows arrive)."""


def remainder_cell(bucket: Any) -> str:
    """'-2' dropped, '+3' repeated, '' neither."""
    if bucket.dropped:
        return f"-{bucket.dropped}"
    return f"+{bucket.repeated}" if bucket.repeated else ""


class BucketTable(Vertical):
    """Per-bucket table and totals; `request` schedules a rescan."""

    class Updated(Message):
        """A new report (None when no report could be built)."""

        def __init__(self, report: Any) -> None:
            super().__init__()
            self.report = report

    def __init__(self, builder: Callable[..., Any] | None, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "Buckets"
        self.builder = builder
        self.report: Any = None
        self._pending: tuple[TrainConfig, Path | None] | None = None
        self._timer: Timer | None = None
        self._empty_shown = False

    def compose(self) -> ComposeResult:
        table: DataTable[str] = DataTable(cursor_type="none", show_cursor=False, zebra_stripes=True)
        for label, width in COLUMNS:
            table.add_column(label, width=width)
        table.can_focus = False
        yield table
        yield Static("", id="bucket-totals")

    def request(self, config: TrainConfig, config_path: Path | None) -> None:
        """Rescan soon (changes in quick succession are scanned once)."""
        self._pending = (config.model_copy(deep=True), config_path)
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(DEBOUNCE_S, self._scan)

    def _scan(self) -> None:
        if self._pending is None:
            return
        config, path = self._pending
        if self.builder is None:
            self.query_one("#bucket-totals", Static).update("dataset report not available")
            return
        if not config.concepts:
            if self.report is not None or not self._empty_shown:
                self._show(None, "no concepts yet: add one in Concepts")
                self._empty_shown = True
            return
        self._empty_shown = False
        self.query_one("#bucket-totals", Static).update("scanning…")
        builder = self.builder
        start_worker(self, lambda: builder(config, path), what="Dataset scan", group="buckets", thread=True, exclusive=True)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "buckets":
            return
        if event.state is WorkerState.SUCCESS:
            self._show(event.worker.result, "")
        elif event.state is WorkerState.ERROR:
            self._show(None, f"scan failed: {event.worker.error}")

    def _show(self, report: Any, message: str) -> None:
        self.report = report
        table = self.query_one(DataTable)
        table.clear()
        totals = self.query_one("#bucket-totals", Static)
        if report is None:
            totals.update(message)
        else:
            for bucket in report.buckets:
                size = Text(f"{bucket.width}x{bucket.height}", "yellow" if bucket.warnings else "")
                table.add_row(size, str(bucket.images), str(bucket.batches), remainder_cell(bucket))
            totals.update(self._totals(report))
        self.post_message(self.Updated(report))

    @staticmethod
    def _totals(report: Any) -> Text:
        text = Text(f"{report.total_images} img · {report.steps_per_epoch} steps/epoch · {report.total_steps} total")
        if report.skipped:
            text.append(f"\n{len(report.skipped)} files skipped", "yellow")
        for error in report.errors:
            text.append(f"\n✗ {error}", "red")
        for warning in report.warnings:
            text.append(f"\n! {warning.removeprefix('bucket ')}", "yellow")
        return text

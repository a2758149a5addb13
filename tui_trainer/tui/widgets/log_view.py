"""The tail of train.log, capped so a long run never grows the view."""

from __future__ import annotations

from textual.widgets import Log

LOG_LINES = 1000
"""Lines kept in the view."""


class LogView(Log):
    """Appends new log lines and follows the end (unless the user scrolled up)."""

    DEFAULT_CSS = """
    LogView { border: round $primary 50%; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(max_lines=LOG_LINES, highlight=False, id=id)

    def on_mount(self) -> None:
        self.border_title = "Log"

    def add_lines(self, lines: list[str]) -> None:
        """Append lines (keeping only the last LOG_LINES)."""
        if lines:
            self.write_lines(lines[-LOG_LINES:])

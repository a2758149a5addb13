"""The help line under a section: the focused field's docstring from the schema."""

from __future__ import annotations

from textual.widgets import Static


class HelpBar(Static):
    """Shows help for whatever has focus."""

    DEFAULT_HELP = "Tab / Shift+Tab move between fields; PgDn / PgUp change section; Ctrl+P lists every action."

    def on_mount(self) -> None:
        self.update(self.DEFAULT_HELP)

    def show(self, text: str | None) -> None:
        """Show `text`, or the default hint."""
        self.update(text or self.DEFAULT_HELP)

"""The help line under a section or a dialog's fields: the focused field's docstring from the schema."""

from __future__ import annotations

from textual.widgets import Static


class HelpBar(Static):
    """Shows help for whatever has focus, else a hint about the keys."""

    DEFAULT_CSS = "HelpBar { height: 4; padding: 0 1; color: $text-muted; border-top: solid $primary 30%; }"
    """Three lines: most fields' help is 60-160 characters."""
    DEFAULT_HELP = "Tab / Shift+Tab move between fields; PgDn / PgUp change section; Ctrl+P lists every action."

    def __init__(self, default_help: str = DEFAULT_HELP, *, id: str | None = None) -> None:
        super().__init__(default_help, id=id)
        self.default_help = default_help

    def show(self, text: str | None) -> None:
        """Show `text`, or the default hint."""
        self.update(text or self.default_help)

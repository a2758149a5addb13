"""The top line: app name, file (with * when unsaved), mode, and the GPU the budget is against."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.widgets import Static


class TitleBar(Static):
    """One-line header."""

    _shown: tuple | None = None

    def show(self, path: Path | None, dirty: bool, mode: str, gpu: str) -> None:
        """Redraw with the current file state (only when it changed)."""
        state = (path, dirty, mode, gpu, self.size.width)
        if state == self._shown:
            return
        self._shown = state
        name = path.name if path else "new config"
        left = Text.assemble(("tui-trainer ", "bold"), f" {name}{'*' if dirty else ''}", (f"  {mode}", "dim"))
        width = max(self.size.width, 40)
        gap = max(1, width - len(left) - len(gpu))
        self.update(left + Text(" " * gap) + Text(gpu, "dim"), layout=False)

"""The first frame: the editor's outline (title, sections) while the editor and the config load in a thread.

Importing the config schema and the editor's widgets, validating the file and building the first section
take most of a second on a small machine; this screen is light enough to be on the terminal about as soon as
Textual itself can draw, so a user over SSH sees the app at once. The app replaces it with the editor (or the
start page) when the load is done.
"""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, OptionList, Static

from tui_trainer.tui.outline import SECTION_TITLES
from tui_trainer.tui.widgets.title_bar import TitleBar


class OpeningScreen(Screen[None]):
    """Title bar, the section list (when a config is being opened) and what is being loaded."""

    AUTO_FOCUS = ""

    def __init__(self, config_path: Path | None) -> None:
        super().__init__()
        self.config_path = config_path

    def compose(self) -> ComposeResult:
        yield TitleBar(id="title-bar")
        with Horizontal(id="main"):
            if self.config_path is not None:
                sidebar = OptionList(*SECTION_TITLES.values(), id="sidebar")
                sidebar.can_focus = False
                sidebar.border_title = "Sections"
                yield sidebar
            yield Static(f"Opening {self.config_path or 'tui-trainer'} …", id="opening-message")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(TitleBar).show(self.config_path, False, "opening", "")

"""The first frame: the editor's outline (title, sections), shown while the editor and the config load.

Importing the config schema and the editor's widgets, validating the file and building the first section
take most of a second on a small machine; this screen is light enough to be on the terminal about as soon as
Textual itself can draw, so a user over SSH sees the app at once. Right after it is drawn the app loads the
rest and shows the editor, or the start page, over it (it is the app's bottom screen). Keys pressed meanwhile
are kept by the app and replayed once that screen takes input (`TrainerApp.typed_ahead`).
"""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Static

from tui_trainer.tui.outline import SECTION_TITLES
from tui_trainer.tui.widgets.title_bar import TitleBar


class OpeningScreen(Screen[None]):
    """Title bar, the section list (when a config is being opened) and what is being loaded.

    Plain Statics in the editor's layout (the sidebar has the editor's id and style): an OptionList and a
    Footer here cost more than the rest of this frame, and nothing can be chosen before the editor is in.
    """

    AUTO_FOCUS = ""
    DEFAULT_CSS = "OpeningScreen #sidebar { text-wrap: nowrap; text-overflow: ellipsis; }"

    def __init__(self, config_path: Path | None) -> None:
        super().__init__()
        self.config_path = config_path

    def compose(self) -> ComposeResult:
        yield TitleBar(id="title-bar")
        with Horizontal(id="main"):
            if self.config_path is not None:
                sidebar = Static("\n".join(SECTION_TITLES.values()), id="sidebar")
                sidebar.border_title = "Sections"
                yield sidebar
            yield Static(f"Opening {self.config_path or 'tui-trainer'} …", id="opening-message")

    def on_mount(self) -> None:
        self.query_one(TitleBar).show(self.config_path, False, "opening", "")

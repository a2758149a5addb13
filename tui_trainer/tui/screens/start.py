"""Start page: a new run from a family + method + preset (the wizard), or a recent file."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Footer, Label, OptionList, Select, Static
from textual.widgets.option_list import Option

from tui_trainer.config import load_preset, preset_names, preset_text
from tui_trainer.config.enums import Family, Method


def preset_index() -> dict[tuple[str, str], list[str]]:
    """(family, method) -> its shipped presets, the plainest name first (z-image-lora before z-image-lora-8gb): one
    per GPU class or base precision."""
    index: dict[tuple[str, str], list[str]] = {}
    for name in preset_names():
        config = load_preset(name)
        index.setdefault((config.model.family.value, config.method.value), []).append(name)
    return {key: sorted(names, key=lambda name: (len(name), name)) for key, names in index.items()}


def preset_summary(name: str) -> str:
    """The preset's leading comment, as one paragraph."""
    lines = []
    for line in preset_text(name).splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# ").strip())
    return " ".join(lines)


class StartScreen(Screen[None]):
    """Pick family, method and preset, then Enter (or PgDn) starts the wizard; or reopen a recent file."""

    BINDINGS = [Binding("pagedown", "start", "Start wizard", id="start_wizard", priority=True)]

    class NewRun(Message):
        """Start the wizard from `preset`."""

        def __init__(self, preset: str) -> None:
            super().__init__()
            self.preset = preset

    class OpenFile(Message):
        """Open `path` in the editor."""

        def __init__(self, path: Path) -> None:
            super().__init__()
            self.path = path

    def __init__(self, recent: list[Path]) -> None:
        super().__init__()
        self.recent = recent
        self.presets = preset_index()

    def compose(self) -> ComposeResult:
        families = [f.value for f in Family if any(fam == f.value for fam, _ in self.presets)]
        with Vertical(id="start"):
            yield Static("tui-trainer · set up a Stable Diffusion training run", id="start-title")
            if self.recent:
                yield Label("Reopen a recent file (Enter):")
                yield OptionList(*(Option(str(path), id=str(path)) for path in self.recent), id="recent")
            with Vertical(id="new-run") as new_run:
                new_run.border_title = "New run"
                yield Label("Model family")
                yield Select([(family, family) for family in families], value=families[0], allow_blank=False,
                             id="family", compact=True)
                yield Label("Training method")
                methods = self._methods(families[0])
                yield Select(methods, allow_blank=False, id="method", compact=True)
                yield Label("Preset")
                yield Select(self._presets(families[0], methods[0][1]), allow_blank=False, id="preset", compact=True)
                yield Static("", id="preset-summary")
                yield Button("Start wizard", id="start-wizard", variant="primary", compact=True)
        yield Footer()

    def _methods(self, family: str) -> list[tuple[str, str]]:
        return [(m.value, m.value) for m in Method if (family, m.value) in self.presets]

    def _presets(self, family: str, method: str) -> list[tuple[str, str]]:
        return [(name, name) for name in self.presets[(family, method)]]

    @property
    def preset(self) -> str:
        """The chosen preset."""
        return str(self.query_one("#preset", Select).value)

    def on_mount(self) -> None:
        self._show_summary()

    def on_select_changed(self, event: Select.Changed) -> None:
        family = str(self.query_one("#family", Select).value)
        if event.select.id == "family":
            self.query_one("#method", Select).set_options(self._methods(family))
        if event.select.id in ("family", "method"):
            method = str(self.query_one("#method", Select).value)
            self.query_one("#preset", Select).set_options(self._presets(family, method))
        self._show_summary()

    def _show_summary(self) -> None:
        self.query_one("#preset-summary", Static).update(f"preset {self.preset}: {preset_summary(self.preset)}")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.post_message(self.OpenFile(Path(str(event.option.id))))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_start()

    def action_start(self) -> None:
        """Start the wizard from the chosen preset."""
        self.post_message(self.NewRun(self.preset))

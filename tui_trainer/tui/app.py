"""The tui-trainer app: start page or editor, file state, keymap, command palette. Never imports torch.

This module imports only what the first frame needs (Textual and the opening screen); the config schema,
the editor, the start page, the keymap and recent-files code are imported once that frame is on the terminal
(see `_open_first_screen`).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import events
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from tui_trainer.tui.screens.opening import OpeningScreen

if TYPE_CHECKING:
    from tui_trainer.config.importing import ImportReport
    from tui_trainer.tui.document import ConfigDocument
    from tui_trainer.tui.recent import RecentFiles
    from tui_trainer.tui.screens.editor import EditorScreen
    from tui_trainer.tui.screens.run_monitor import RunMonitorScreen
    from tui_trainer.tui.screens.start import StartScreen
    from tui_trainer.tui.services import Services

APP_NAME = "tui-trainer"


class TrainerApp(App[None]):
    """Set up a training run: a wizard for new configs, section screens for existing ones."""

    CSS_PATH = "app.tcss"
    TITLE = APP_NAME
    BINDINGS = [Binding("ctrl+q", "quit", "Quit", id="quit", priority=True),
                Binding("ctrl+r", "start_run", "Start", id="start_run")]
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]

    def __init__(self, config_path: str | Path | None = None, *, services: Services | None = None,
                 state_dir: str | Path | None = None, config_dir: str | Path | None = None,
                 target_bytes: int | None = None, cursor_blink: bool = True,
                 initial_screen: Callable[[], Screen] | None = None) -> None:
        super().__init__()
        self.config_path = Path(config_path) if config_path else None
        self.services = services
        """The core functions; None until `_load_modules` sets the real ones (tests pass their own)."""
        self.state_dir = Path(state_dir) if state_dir else None
        self.config_dir = Path(config_dir) if config_dir else None
        self.target_bytes = target_bytes
        self.cursor_blink = cursor_blink
        self.gpu_probe: Any = None
        self.initial_screen = initial_screen
        self.loaded = False
        """Whether the editor and start page modules are imported (after the first frame)."""
        self.typed_ahead: list[events.Key | events.Paste] | None = None if initial_screen else []
        """Keys pressed (and text pasted) while the opening screen, which has nothing to type into, is up; None once
        the first screen takes input. `start_up_done` replays them in order."""

    @cached_property
    def recent(self) -> RecentFiles:
        """Recently opened files, in the state dir (default: platformdirs' user state dir)."""
        from platformdirs import user_state_dir

        from tui_trainer.tui.recent import RecentFiles

        return RecentFiles(self.state_dir or Path(user_state_dir(APP_NAME)))

    @cached_property
    def keymap_file(self) -> Path:
        """The user's keymap file, in the config dir (default: platformdirs' user config dir)."""
        from platformdirs import user_config_dir

        from tui_trainer.tui.keymap import KEYMAP_FILE

        return (self.config_dir or Path(user_config_dir(APP_NAME))) / KEYMAP_FILE

    def get_default_screen(self) -> Screen:
        """The bottom of the screen stack: the opening screen, drawn first (under a given initial screen, a blank one).

        The opening screen stays under the screens shown over it: Textual cannot switch away from the bottom screen.
        """
        return super().get_default_screen() if self.initial_screen else OpeningScreen(self.config_path)

    def on_mount(self) -> None:
        if self.initial_screen is not None:
            self._load_modules()
            self._apply_keymap()
            self.push_screen(self.initial_screen())
            self.call_after_refresh(self.start_up_done)
            return
        self.call_after_refresh(self._open_first_screen)

    def _load_modules(self) -> None:
        """Import the editor, the start page and the core behind them; fill in the default services."""
        from tui_trainer.tui.screens import editor, start  # noqa: F401
        from tui_trainer.tui.services import Services

        if self.services is None:
            self.services = Services.default()
        self.loaded = True

    def _open_first_screen(self) -> None:
        """After the first frame: import the editor and show the config's editor over the opening screen, or the
        start page (and the config's errors, if it has any)."""
        from tui_trainer.config import ConfigError
        from tui_trainer.tui.document import ConfigDocument
        from tui_trainer.tui.screens.problems import ProblemsDialog
        from tui_trainer.tui.screens.start import StartScreen

        self._load_modules()
        self._apply_keymap()
        path = self.config_path
        if path is not None and path.exists():
            try:
                document, report = ConfigDocument.open_any(path)
            except ConfigError as error:
                self.push_screen(StartScreen(self.recent.load()))
                self.push_screen(ProblemsDialog(f"{path} not opened", [str(problem) for problem in error.problems]))
                self.call_after_refresh(self.start_up_done)
            else:
                self.remember(document.path)
                self.push_screen(self.editor(document))  # start-up is done when it is Ready
                self.show_import_report(report)
            return
        self.push_screen(StartScreen(self.recent.load()))
        self.call_after_refresh(self.start_up_done)
        if path is not None:
            self.notify(f"{path} does not exist yet: pick a preset; Save will ask where to write it.")

    async def on_event(self, event: events.Event) -> None:
        if self.typed_ahead is not None and isinstance(event, (events.Key, events.Paste)) and not event.is_forwarded:
            self.typed_ahead.append(event)
            return
        await super().on_event(event)

    def on_editor_screen_ready(self, message: EditorScreen.Ready) -> None:
        self.start_up_done()

    def start_up_done(self) -> None:
        """The first screen takes input: resume the cycle collector that `cli.run_app` paused for start-up, and
        replay the keys pressed meanwhile (a no-op after the first call)."""
        gc.enable()
        typed_ahead, self.typed_ahead = self.typed_ahead or [], None
        for event in typed_ahead:
            self.post_message(events.Key(event.key, event.character) if isinstance(event, events.Key)
                              else events.Paste(event.text))

    def _apply_keymap(self) -> None:
        if not self.keymap_file.is_file():
            return
        # The run screens pull in numpy: imported only when a keymap needs their ids.
        from tui_trainer.tui.keymap import binding_ids, load_keymap
        from tui_trainer.tui.screens.editor import EditorScreen
        from tui_trainer.tui.screens.queue import QueueScreen
        from tui_trainer.tui.screens.run_monitor import RunMonitorScreen
        from tui_trainer.tui.screens.runs_browser import RunsBrowserScreen
        from tui_trainer.tui.screens.start import StartScreen
        from tui_trainer.tui.widgets.record_list import RecordList

        known = binding_ids((TrainerApp, EditorScreen, StartScreen, RecordList, RunMonitorScreen, RunsBrowserScreen, QueueScreen))
        keymap, problems = load_keymap(self.keymap_file, known)
        self.set_keymap(keymap)
        for problem in problems:
            self.notify(problem, severity="warning", title="Keymap")

    def editor_screen(self) -> EditorScreen | None:
        """The topmost editor on the screen stack, if any (None while the editor module is not loaded)."""
        if not self.loaded:
            return None
        from tui_trainer.tui.screens.editor import EditorScreen

        return next((screen for screen in reversed(self.screen_stack) if isinstance(screen, EditorScreen)), None)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return self.editor_screen() is self.screen if action == "start_run" else True

    def action_start_run(self) -> None:
        """Validate and save the config being edited, start its trainer detached and watch the run."""
        from tui_trainer.tui.run_start import start_from_editor

        editor = self.editor_screen()
        if editor is self.screen and editor is not None:
            start_from_editor(editor)

    def editor(self, document: ConfigDocument, *, wizard: bool = False) -> EditorScreen:
        """A new editor screen for a document."""
        from tui_trainer.tui.screens.editor import EditorScreen

        return EditorScreen(document, self.services, wizard=wizard, target_bytes=self.target_bytes)

    def open_file(self, path: Path) -> None:
        """Open a config (or import a OneTrainer / kohya / kohya_ss file) in the editor; on errors show them."""
        from tui_trainer.config import ConfigError
        from tui_trainer.tui.document import ConfigDocument
        from tui_trainer.tui.screens.problems import ProblemsDialog

        try:
            document, report = ConfigDocument.open_any(path)
        except ConfigError as error:
            self.push_screen(ProblemsDialog(f"{path} not opened", [str(problem) for problem in error.problems]))
            return
        self.remember(document.path)
        self._show_editor(document)
        self.show_import_report(report)

    def show_import_report(self, report: ImportReport | None) -> None:
        """Show an import's report over the editor of the converted config (nothing when the file was ours)."""
        if report is not None:
            from tui_trainer.tui.screens.import_report import ImportReportDialog

            self.push_screen(ImportReportDialog(report))

    def _show_editor(self, document: ConfigDocument, *, wizard: bool = False) -> None:
        from tui_trainer.tui.screens.start import StartScreen

        screen = self.editor(document, wizard=wizard)
        if isinstance(self.screen, StartScreen):
            self.switch_screen(screen)
        else:
            self.push_screen(screen)

    def start_wizard(self, preset: str) -> None:
        """A new, unsaved document from a preset, walked section by section."""
        from tui_trainer.config import load_preset
        from tui_trainer.tui.document import ConfigDocument

        self._show_editor(ConfigDocument(config=load_preset(preset), path=self.config_path, dirty=True), wizard=True)

    def on_start_screen_new_run(self, message: StartScreen.NewRun) -> None:
        self.start_wizard(message.preset)

    def on_start_screen_open_file(self, message: StartScreen.OpenFile) -> None:
        self.open_file(message.path)

    def on_run_monitor_screen_show_runs(self, message: RunMonitorScreen.ShowRuns) -> None:
        """Back to the runs list the run screen was opened from, else a new one of the run's workspace."""
        from tui_trainer.tui.screens.runs_browser import RunsBrowserScreen

        stack = self.screen_stack
        if len(stack) > 2 and isinstance(stack[-2], RunsBrowserScreen):
            self.pop_screen()
        else:
            self.push_screen(RunsBrowserScreen(message.workspace))

    def show_queue(self) -> None:
        """The run queue of the edited config's workspace, able to add that config (as saved)."""
        from tui_trainer.config import resolve_path
        from tui_trainer.tui.screens.queue import QueueScreen

        document = self.document
        if document is not None:
            self.push_screen(QueueScreen(resolve_path(document.path, document.config.workspace.dir), document.path))

    def remember(self, path: Path | None) -> None:
        """Add a file to the recent-files list (never fails the caller)."""
        if path is None:
            return
        try:
            self.recent.add(path)
        except OSError as error:
            self.notify(f"could not update recent files: {error}", severity="warning")

    @property
    def document(self) -> ConfigDocument | None:
        """The document of the editor on screen, if any."""
        editor = self.editor_screen()
        return editor.document if editor is not None else None

    async def action_quit(self) -> None:
        """Quit; unsaved changes are confirmed first."""
        document = self.document
        if document is None or not document.dirty:
            self.exit()
            return
        from tui_trainer.tui.screens.confirm import ConfirmDialog

        self.push_screen(
            ConfirmDialog("You have unsaved changes.", {"save": "Save", "discard": "Quit without saving",
                                                        "cancel": "Cancel"}),
            self._quit_answered,
        )

    def _quit_answered(self, answer: str | None) -> None:
        editor = self.editor_screen()
        if answer == "discard":
            self.exit()
        elif answer == "save" and editor is not None:
            editor.action_save()
            if not editor.document.dirty:
                self.exit()

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        editor = self.editor_screen()
        if editor is not None:
            yield from editor.commands()
            yield SystemCommand("Run queue", "the queue of this config's workspace: add this config, reorder, run",
                                self.show_queue)
        yield SystemCommand("Keymap file", f"remap keys by id in {self.keymap_file}",
                            lambda: self.notify(f"Keymap: {self.keymap_file}\nexample: save = \"ctrl+s,f2\""))

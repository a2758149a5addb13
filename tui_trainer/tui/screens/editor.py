"""The editor: a sidebar of sections, the section being edited, help, and the live VRAM and bucket panels.

The wizard is the same screen walked section by section with PgDn / PgUp, ending on the review page.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Iterable
from functools import partial
from pathlib import Path

from pydantic import ValidationError
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Button, ContentSwitcher, Footer, OptionList
from textual.widgets.option_list import Option
from textual.worker import Worker, WorkerState

from tui_trainer.config import ConfigError, TrainConfig, load_config
from tui_trainer.tui.document import ConfigDocument, environment_editor
from tui_trainer.tui.screens.backup import BackupPane
from tui_trainer.tui.screens.concepts import ConceptsPane
from tui_trainer.tui.screens.confirm import ConfirmDialog
from tui_trainer.tui.screens.distributed import DistributedPane
from tui_trainer.tui.screens.import_report import ImportReportDialog
from tui_trainer.tui.screens.method_specific import MethodPane
from tui_trainer.tui.screens.model_method import ModelMethodPane
from tui_trainer.tui.screens.optimizer import OptimizerPane
from tui_trainer.tui.screens.path_prompt import PathPrompt
from tui_trainer.tui.screens.problems import ProblemsDialog
from tui_trainer.tui.screens.review import ReviewPane
from tui_trainer.tui.screens.samples import SamplesPane
from tui_trainer.tui.screens.scheduler import SchedulerPane
from tui_trainer.tui.screens.section import SectionPane
from tui_trainer.tui.screens.training import TrainingPane
from tui_trainer.tui.screens.workspace import WorkspacePane
from tui_trainer.tui.services import Services
from tui_trainer.tui.widgets.bucket_table import BucketTable
from tui_trainer.tui.widgets.field_editor import FieldEditor
from tui_trainer.tui.widgets.help_bar import HelpBar
from tui_trainer.tui.widgets.record_list import RecordList
from tui_trainer.tui.widgets.title_bar import TitleBar
from tui_trainer.tui.widgets.vram_panel import VramPanel, gpu_label
from tui_trainer.tui.workers import start_worker

SECTIONS: tuple[type[SectionPane], ...] = (
    ModelMethodPane, WorkspacePane, ConceptsPane, SamplesPane, BackupPane, TrainingPane, OptimizerPane,
    SchedulerPane, MethodPane, DistributedPane, ReviewPane,
)
"""Section panes in the order experienced users set a run up (DESIGN.md); the wizard walks them in this order."""

BUCKET_KEYS = ("concepts", "training.resolution", "training.batch_size", "training.bucket_", "model.family",
               "distributed.num_processes", "training.epochs", "training.max_steps")
"""Changes to keys starting with these rescan the dataset report."""

DISK_POLL_S = 1.0


def first_focusable(root: Widget) -> Widget | None:
    """The first focusable widget inside `root`."""
    for widget in root.walk_children(Widget):
        if widget.focusable and not isinstance(widget, SectionPane):
            return widget
    return None


class EditorScreen(Screen[None]):
    """Edit one config document section by section."""

    AUTO_FOCUS = ""
    BINDINGS = [
        Binding("ctrl+s", "save", "Save", id="save", priority=True),
        Binding("f2", "save_as", "Save as", id="save_as", show=False),
        Binding("ctrl+o", "open", "Open", id="open", priority=True),
        Binding("ctrl+e", "edit_externally", "$EDITOR", id="edit_externally", priority=True),
        Binding("ctrl+l", "reload", "Reload", id="reload", show=False),
        Binding("pagedown", "next_section", "Next", id="next_section", priority=True),
        Binding("pageup", "previous_section", "Back", id="previous_section", priority=True),
    ]

    def __init__(self, document: ConfigDocument, services: Services, *, wizard: bool = False,
                 target_bytes: int | None = None) -> None:
        super().__init__()
        self.document = document
        self.services = services
        self.wizard = wizard
        self.target_bytes = target_bytes
        self.estimate = None
        self.report = None
        self._editor_index: dict[str, list[FieldEditor]] | None = None
        self._panes: list[SectionPane] | None = None
        self.section = SECTIONS[0].SECTION
        """The section shown (or being built): set before any await, so quick key presses add up."""

    def compose(self) -> ComposeResult:
        yield TitleBar(id="title-bar")
        with Horizontal(id="main"):
            yield OptionList(id="sidebar")
            with Vertical(id="center"):
                with ContentSwitcher(id="sections", initial=f"section-{SECTIONS[0].SECTION}"):
                    yield from self._make_panes()
                yield HelpBar(id="help-bar")
            with Vertical(id="panels"):
                yield VramPanel(self.services.estimate, target_bytes=self.target_bytes, id="vram")
                yield BucketTable(self.services.build_report, id="buckets")
        yield Footer()

    def _make_panes(self) -> list[SectionPane]:
        return [section(self.document) for section in SECTIONS]

    def on_mount(self) -> None:
        sidebar = self.query_one("#sidebar", OptionList)
        sidebar.border_title = "Sections"
        sidebar.add_options([Option(pane.title, id=pane.SECTION) for pane in self.panes])
        sidebar.highlighted = 0
        self.set_interval(DISK_POLL_S, self._check_disk)
        probe = getattr(self.app, "gpu_probe", None)
        if probe is not None:
            self.vram.set_probe(probe)
        elif self.services.probe_gpus is not None:
            start_worker(self, self.services.probe_gpus, what="GPU probe", group="probe", thread=True)
        else:
            self.vram.set_probe(None)
        self.refresh_all()

    class Ready(Message):
        """The first section is built and its first field focused: the editor takes input."""

    async def on_screen_resume(self) -> None:
        if not self.current.built:
            await self.show_section(self.current.SECTION, focus=True)
            self.post_message(self.Ready())

    @property
    def panes(self) -> list[SectionPane]:
        """The section panes, in order."""
        if self._panes is None:
            self._panes = list(self.query_one("#sections", ContentSwitcher).query_children(SectionPane))
        return self._panes

    @property
    def vram(self) -> VramPanel:
        return self.query_one("#vram", VramPanel)

    @property
    def buckets(self) -> BucketTable:
        return self.query_one("#buckets", BucketTable)

    @property
    def current(self) -> SectionPane:
        """The visible section pane."""
        switcher = self.query_one("#sections", ContentSwitcher)
        return switcher.query_one(f"#{switcher.current}", SectionPane)

    def refresh_all(self) -> None:
        """Recompute panels, titles and the review after a load."""
        self.vram.recompute(self.document.config)
        self.buckets.request(self.document.config, self.document.path)
        self._refresh_titles()

    def _refresh_titles(self) -> None:
        mode = "wizard" if self.wizard else "editor"
        gpu = gpu_label(self.vram.gpu) if self.vram.gpu else "no GPU"
        self.query_one(TitleBar).show(self.document.path, self.document.dirty, mode, gpu)
        sidebar = self.query_one("#sidebar", OptionList)
        for pane in self.panes:
            if sidebar.get_option(pane.SECTION).prompt != pane.title:
                sidebar.replace_option_prompt(pane.SECTION, pane.title)
        current = self.current
        if current.border_title != current.title:
            current.border_title = current.title
        if isinstance(current, ReviewPane):
            current.show(self.estimate, self.report)

    # sections

    async def show_section(self, section: str, *, focus: bool = False) -> None:
        """Switch to a section (and optionally focus its first field)."""
        self.section = section
        switcher = self.query_one("#sections", ContentSwitcher)
        switcher.current = f"section-{section}"
        pane = self.current
        if not pane.built:
            await pane.build()
            self._editor_index = None
        sidebar = self.query_one("#sidebar", OptionList)
        index = sidebar.get_option_index(section)
        if sidebar.highlighted != index:
            sidebar.highlighted = index
        self._refresh_titles()
        if focus:
            self.focus_section()

    def focus_section(self) -> None:
        """Focus the first field of the visible section, now: keys already queued behind the one that changed
        section go to that field (Widget.focus would queue the change behind them)."""
        target = first_focusable(self.current)
        if target is not None:
            self.set_focus(target)

    async def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        sidebar = event.option_list
        if sidebar.id == "sidebar" and sidebar.has_focus and event.option.id and event.option.id != self.section:
            await self.show_section(event.option.id)

    async def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option_list.id == "sidebar" and event.option.id:
            await self.show_section(event.option.id, focus=True)

    async def _step(self, offset: int) -> None:
        ids = [pane.SECTION for pane in self.panes]
        index = ids.index(self.section) + offset
        if 0 <= index < len(ids):
            await self.show_section(ids[index], focus=True)

    async def action_next_section(self) -> None:
        """Next section (on the review page: save)."""
        if self.section == ReviewPane.SECTION:
            self.action_save()
        else:
            await self._step(1)

    async def action_previous_section(self) -> None:
        """Previous section."""
        await self._step(-1)

    def on_descendant_focus(self, event) -> None:
        node = event.widget
        while node is not None and not isinstance(node, (FieldEditor, RecordList, VramPanel)):
            node = node.parent
        help_bar = self.query_one(HelpBar)
        if isinstance(node, FieldEditor):
            help_bar.show(node.help_text)
        elif isinstance(node, RecordList):
            help_bar.show("a add · e/Enter edit · x remove · space on/off · Shift+↑/↓ move")
        elif isinstance(node, VramPanel):
            help_bar.show("Target VRAM in GiB to budget against when no GPU is detected (e.g. 24).")
        else:
            help_bar.show(None)

    # edits

    async def on_field_editor_changed(self, event: FieldEditor.Changed) -> None:
        event.stop()
        if event.reason is not None:
            self.document.mark_invalid(event.key, event.reason)
        else:
            try:
                self.document.set(event.key, event.value)
            except ValidationError as error:
                self.document.mark_invalid(event.key, str(error.errors()[0]["msg"]))
            for editor in self._editors.get(event.key, ()):
                if editor is not event.editor:
                    editor.set_value(event.value)
        await self.config_changed(event.key)

    async def on_record_list_changed(self, event: RecordList.Changed) -> None:
        event.stop()
        self.document.set(event.key, event.records)
        await self.config_changed(event.key)

    @property
    def _editors(self) -> dict[str, list[FieldEditor]]:
        """Field editors by key (a key can be shown in two sections, like the global learning rate)."""
        if self._editor_index is None:
            self._editor_index = {}
            for editor in self.query(FieldEditor):
                self._editor_index.setdefault(editor.key, []).append(editor)
        return self._editor_index

    async def config_changed(self, key: str) -> None:
        """Propagate an accepted edit: panes that depend on it, panels, titles."""
        for pane in self.panes:
            if await pane.config_changed(key):
                self._editor_index = None
        self.vram.recompute(self.document.config)
        if key.startswith(BUCKET_KEYS):
            self.buckets.request(self.document.config, self.document.path)
        self._refresh_titles()

    def on_vram_panel_updated(self, event: VramPanel.Updated) -> None:
        self.estimate = event.estimate
        if isinstance(self.current, ReviewPane):
            self.current.show(self.estimate, self.report)

    def on_bucket_table_updated(self, event: BucketTable.Updated) -> None:
        self.report = event.report
        if isinstance(self.current, ReviewPane):
            self.current.show(self.estimate, self.report)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "probe":
            return
        if event.state is WorkerState.SUCCESS:
            self.app.gpu_probe = event.worker.result
            self.vram.set_probe(event.worker.result)
        elif event.state is WorkerState.ERROR:
            self.vram.set_probe(None)
        self._refresh_titles()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "review-save":
            event.stop()
            self.action_save()

    # files

    def action_save(self) -> None:
        """Save to the current file (atomic); asks for a name the first time; blocked while values are invalid."""
        errors = self.document.errors()
        if errors:
            first = errors[0]
            self.notify(f"Cannot save: {first.key}: {first.message}" + (f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""),
                        severity="error", title="Invalid config")
            start_worker(self, self.show_section(ReviewPane.SECTION), what="Showing the review")
            return
        if self.document.path is None:
            self.action_save_as()
            return
        self._write(self.document.path)

    def action_save_as(self) -> None:
        """Save under a new name."""
        self.app.push_screen(PathPrompt("Save as", str(self.document.default_save_path())), self._save_as_chosen)

    def _save_as_chosen(self, path: Path | None) -> None:
        if path is not None:
            self._write(path)

    def _write(self, path: Path) -> None:
        try:
            saved = self.document.save(path)
        except (ConfigError, OSError) as error:
            self.notify(str(error), severity="error", title="Not saved")
            return
        self.app.remember(saved)
        self.wizard = False
        self.notify(f"Saved {saved}", title="Saved")
        self._refresh_titles()

    def _confirm_discard(self, then) -> None:
        if not self.document.dirty:
            then()
            return
        self.app.push_screen(
            ConfirmDialog("You have unsaved changes. Discard them?", {"discard": "Discard", "cancel": "Cancel"}),
            lambda answer: then() if answer == "discard" else None,
        )

    def action_open(self) -> None:
        """Open another config file (unsaved changes are confirmed first)."""
        self._confirm_discard(lambda: self.app.push_screen(PathPrompt("Open", must_exist=True), self._open_chosen))

    async def _open_chosen(self, path: Path | None) -> None:
        if path is None:
            return
        try:
            document, report = ConfigDocument.open_any(path)
        except ConfigError as error:
            self._show_problems(f"{path} not opened", error)
            return
        await self.adopt(document.config, document.path, dirty=document.dirty, imported_from=document.imported_from)
        self.app.remember(document.path)
        if report is not None:
            self.app.push_screen(ImportReportDialog(report))

    def _show_problems(self, title: str, error: ConfigError) -> None:
        lines = [str(problem) for problem in error.problems]
        lines.append("Your current settings are kept.")
        self.app.push_screen(ProblemsDialog(title, lines))

    async def adopt(self, config: TrainConfig, path: Path | None, *, dirty: bool = False,
                    imported_from: Path | None = None) -> None:
        """Replace the config being edited (a file's, or one imported from `imported_from`) and rebuild every section."""
        section = self.current.SECTION
        self.document.replace(config, path, dirty=dirty, imported_from=imported_from)
        switcher = self.query_one("#sections", ContentSwitcher)
        await switcher.remove_children()
        await switcher.mount_all(self._make_panes())
        self._editor_index = None
        self._panes = None
        await self.show_section(section)
        self.refresh_all()

    async def load_from_disk(self, title: str) -> bool:
        """Re-read the file; on errors show them and keep the current state. True when loaded."""
        if self.document.path is None:
            return False
        try:
            config = load_config(self.document.path)
        except ConfigError as error:
            self.document.acknowledge_disk()
            self.document.dirty = True
            self._show_problems(title, error)
            self._refresh_titles()
            return False
        await self.adopt(config, self.document.path)
        return True

    def action_reload(self) -> None:
        """Reload the file from disk (unsaved changes are confirmed first)."""
        self._confirm_discard(lambda: start_worker(self, self.load_from_disk("Reload failed"), what="Reload", group="reload"))

    async def _check_disk(self) -> None:
        if not self.document.changed_on_disk():
            return
        self.document.acknowledge_disk()
        name = self.document.path.name if self.document.path else "file"
        if not self.document.dirty:
            if await self.load_from_disk(f"{name} changed on disk and has errors"):
                self.notify(f"{name} changed on disk; reloaded")
            return
        self.app.push_screen(
            ConfirmDialog(f"{name} changed on disk. Reload it and lose your unsaved changes?",
                          {"reload": "Reload", "keep": "Keep mine"}),
            lambda answer: start_worker(self, self.load_from_disk("Reload failed"), what="Reload", group="reload")
            if answer == "reload" else None,
        )

    async def action_edit_externally(self) -> None:
        """Save, open the TOML in $EDITOR, then reload it (errors are shown and the current state kept)."""
        if self.document.path is None or self.document.dirty:
            self.action_save()
            if self.document.path is None or self.document.dirty:
                return
        command = [*shlex.split(environment_editor()), str(self.document.path)]
        with self.app.suspend():
            subprocess.run(command, check=False)
        await self.load_from_disk(f"{self.document.path.name} has errors after editing")

    def commands(self) -> Iterable[SystemCommand]:
        """Command-palette entries: every binding of this screen, and a jump to each section."""
        for binding in self.BINDINGS:
            yield SystemCommand(binding.description, f"{binding.key}  (keymap id: {binding.id})",
                                partial(self.run_action, binding.action))
        for pane in self.panes:
            yield SystemCommand(f"Go to {pane.title}", "Show this section",
                                partial(self.show_section, pane.SECTION, focus=True))

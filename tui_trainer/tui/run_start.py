"""Start a run from the editor: validate, save, launch the trainer detached, switch to the run screen."""

from __future__ import annotations

from pathlib import Path

from tui_trainer.config import dump_config, with_absolute_paths
from tui_trainer.runs.launch import launch_run
from tui_trainer.runs.layout import RunDir
from tui_trainer.tui.document import ConfigDocument
from tui_trainer.tui.screens.editor import EditorScreen
from tui_trainer.tui.screens.problems import ProblemsDialog
from tui_trainer.tui.screens.run_monitor import RunMonitorScreen


def launch_document(document: ConfigDocument) -> RunDir:
    """Launch a saved, valid document: its config with absolute paths goes into a new run folder."""
    assert document.path is not None
    config = with_absolute_paths(document.config, document.path)
    return launch_run(Path(config.workspace.dir), config.workspace.run_name, dump_config(config))


def start_from_editor(editor: EditorScreen) -> RunDir | None:
    """Save (blocked while invalid, asks for a name the first time), check paths, launch and watch the run."""
    document = editor.document
    unnamed = document.path is None
    editor.action_save()
    if document.path is None or document.dirty:
        if unnamed and not document.errors():
            editor.notify("Choose where to save the config, then press ctrl+r again to start.", title="Start")
        return None
    problems = document.path_problems()
    if problems:
        editor.app.push_screen(ProblemsDialog("Not started: fix these first", [str(problem) for problem in problems]))
        return None
    try:
        run = launch_document(document)
    except OSError as error:
        editor.notify(str(error), severity="error", title="Not started")
        return None
    editor.app.push_screen(RunMonitorScreen(run))
    return run

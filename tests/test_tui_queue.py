"""The queue screen (add the open config, reorder, remove, pause, open a run) and queued entries in the runs browser,
keyboard only, against the queue folder on disk."""

from __future__ import annotations

from pathlib import Path

from test_tui_runs import FakeRun
from train_support import write_config
from tui_support import make_app, screen_text, wait_for
from tui_trainer.runs.queue import EntryState, RunQueue
from tui_trainer.tui.screens.queue import QueueScreen
from tui_trainer.tui.screens.run_monitor import RunMonitorScreen
from tui_trainer.tui.screens.runs_browser import RunsBrowserScreen


def queued_config(tmp_path: Path, model: Path) -> tuple[Path, Path]:
    from tui_trainer.devkit.datasets import make_dataset

    workspace = tmp_path / "ws"
    data = make_dataset(tmp_path / "data", ((64, 64, 2),))
    return write_config(tmp_path, model, data, workspace=workspace), workspace


async def test_queue_screen_adds_reorders_pauses_removes_and_opens_a_run(tmp_path: Path, tiny_sd15: Path):
    config, workspace = queued_config(tmp_path, tiny_sd15)
    queue = RunQueue(workspace)
    app = make_app(tmp_path, initial_screen=lambda: QueueScreen(workspace, config, refresh_interval=0.05))
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, QueueScreen) and app.screen.loaded)
        screen = app.screen
        await pilot.press("a")
        await pilot.press("a")
        await wait_for(pilot, lambda: len(screen.entries) == 2)
        first, second = queue.entries()
        assert "$" not in queue.config_file(first).read_text() and str(tiny_sd15) in queue.config_file(first).read_text()
        await pilot.press("]")  # the cursor's entry (the first) goes down
        await wait_for(pilot, lambda: [entry.id for entry in queue.entries()] == [second.id, first.id])
        await pilot.press("p")
        await wait_for(pilot, lambda: queue.paused and "paused" in screen_text(app))
        await pilot.press("p")
        await wait_for(pilot, lambda: not queue.paused)
        await pilot.press("delete")  # the cursor followed the moved entry
        await wait_for(pilot, lambda: [entry.id for entry in queue.entries()] == [second.id])
        fake = FakeRun(workspace, "tiny")
        fake.status("finished", step=10)
        queue.set_state(second, EntryState.FINISHED, run=str(fake.run.path))
        await wait_for(pilot, lambda: "finished" in screen_text(app) and screen.selected.run is not None)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, RunMonitorScreen) and app.screen.run == fake.run)


async def test_runs_browser_lists_pending_queue_entries_first(tmp_path: Path):
    workspace = tmp_path / "ws"
    FakeRun(workspace, "done").status("finished", step=10)
    queue = RunQueue(workspace)
    queue.add("# c\n", "later-run", "/later.toml")
    app = make_app(tmp_path, initial_screen=lambda: RunsBrowserScreen(workspace, refresh_interval=0.05))
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, RunsBrowserScreen) and app.screen.loaded)
        text = screen_text(app)
        assert "later-run" in text and "queued #1" in text and "done-" in text
        assert text.index("later-run") < text.index("done-")
        await pilot.press("enter")  # on the queued row: the queue screen
        await wait_for(pilot, lambda: isinstance(app.screen, QueueScreen))

"""The run screen and the runs browser against synthesised run folders (no trainer), and the start hook."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tui_support import make_app, screen_text, wait_for
from tui_trainer.cli import main, runs_workspace
from tui_trainer.config import dump_config, load_config, load_preset, parse_config
from tui_trainer.config.schema import ConceptConfig
from tui_trainer.devkit.datasets import make_dataset
from tui_trainer.runs.commands import Command
from tui_trainer.runs.events import SampleEvent
from tui_trainer.runs.layout import RunDir, create_run_dir
from tui_trainer.runs.status import write_status
from tui_trainer.runs.summary import RunSummary, latest_samples
from tui_trainer.runs.watch import LogTail
from tui_trainer.tui.screens.confirm import ConfirmDialog
from tui_trainer.tui.screens.editor import EditorScreen
from tui_trainer.tui.screens.path_prompt import PathPrompt
from tui_trainer.tui.screens.problems import ProblemsDialog
from tui_trainer.tui.screens.resume_dialog import ResumeDialog
from tui_trainer.tui.screens.run_monitor import RunMonitorScreen
from tui_trainer.tui.screens.runs_browser import RunsBrowserScreen
from tui_trainer.tui.widgets.log_view import LOG_LINES, LogView
from tui_trainer.tui.widgets.loss_chart import LossChart, band_rows, braille_cells, column_extremes, column_means
from tui_trainer.tui.widgets.run_progress import RunProgress
from tui_trainer.tui.widgets.sample_view import SampleView

CONFIG = '[training]\nepochs = 2\n\n[[samples]]\nprompt = "a red circle"\n\n[[samples]]\nprompt = "a blue square"\n'


class FakeRun:
    """A run folder written by hand, the way the trainer writes it."""

    def __init__(self, workspace: Path, name: str = "demo", config: str = CONFIG):
        self.run = create_run_dir(workspace, name, config)
        self.clock = time.time() - 100

    def event(self, type: str, **fields) -> None:
        self.clock += 1.0
        with open(self.run.events_file, "a") as handle:
            handle.write(json.dumps({"type": type, "time": self.clock, **fields}) + "\n")

    def partial(self, text: str) -> None:
        with open(self.run.events_file, "a") as handle:
            handle.write(text)

    def step(self, step: int, loss: float, smoothed: float, **fields) -> None:
        event = {"step": step, "total_steps": 10, "epoch": 1, "epochs": 2, "loss": loss, "smoothed_loss": smoothed,
                 "lr": {"unet": 1e-4, "text_encoder": 5e-5}, "it_per_s": 1.5, "s_per_step": 1 / 1.5, "eta_s": 5.0}
        self.event("step", **{**event, **fields})

    def status(self, state: str, **fields) -> None:
        write_status(self.run, state=state, **fields)

    def log(self, *lines: str) -> None:
        with open(self.run.log_file, "a") as handle:
            handle.write("".join(line + "\n" for line in lines))


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def monitor_app(tmp_path: Path, run: RunDir):
    return make_app(tmp_path, initial_screen=lambda: RunMonitorScreen(run, poll_interval=0.05))


async def on_monitor(pilot) -> RunMonitorScreen:
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, RunMonitorScreen) and pilot.app.screen.polls > 0)
    return pilot.app.screen


async def next_poll(pilot, screen: RunMonitorScreen) -> None:
    """Wait until the screen has read the folder twice more (so everything written before is shown)."""
    target = screen.polls + 2
    await wait_for(pilot, lambda: screen.polls >= target)


# run screen


async def test_incremental_events_show_exact_values_and_wait_for_a_partial_line(tmp_path: Path):
    fake = FakeRun(tmp_path / "ws")
    fake.status("training", step=0, total_steps=10)
    fake.event("start", total_steps=10, epochs=2, family="sd15", method="lora", device="cpu")
    app = monitor_app(tmp_path, fake.run)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await on_monitor(pilot)
        chart = screen.query_one(LossChart)
        fake.step(1, 0.5, 0.5)
        fake.step(2, 0.3, 0.4)
        fake.step(3, 0.1, 0.3)
        fake.partial('{"type": "step", "time": 1795000009.0, "step": 4, "total_steps": 10, "ep')
        await wait_for(pilot, lambda: "step 3/10" in screen_text(app))
        await next_poll(pilot, screen)
        text = screen_text(app)
        assert "demo-" in text and "training" in text and "elapsed 0:0" in text
        assert "step 3/10  epoch 1/2  1.50 it/s  ETA 0:00:05" in text
        assert "lr unet 1.00e-04  text_encoder 5.00e-05" in text
        assert "VRAM n/a" in text
        assert "3 steps · last 0.1000 · avg 0.3000" in text
        assert "run 3/10 steps ETA 0:00:05" in text
        assert chart.points == 3 and list(chart.steps) == [1, 2, 3] and list(chart.raw) == [0.5, 0.3, 0.1]
        assert screen.summary.step == 3
        fake.partial('och": 2, "epochs": 2, "loss": 0.25, "smoothed_loss": 0.2875, "lr": {"unet": 9e-05}, '
                     '"it_per_s": 2.0, "eta_s": 3.0, "vram_bytes": 3221225472}\n')
        await wait_for(pilot, lambda: "step 4/10" in screen_text(app))
        text = screen_text(app)
        assert "step 4/10  epoch 2/2  2.00 it/s  ETA 0:00:03" in text
        assert "lr unet 9.00e-05" in text and "VRAM 3.0 GiB" in text
        assert "4 steps · last 0.2500 · avg 0.2875" in text
        assert chart.points == 4


async def test_error_event_shows_message_and_hint_and_disables_commands(tmp_path: Path):
    fake = FakeRun(tmp_path / "ws")
    fake.event("start", total_steps=10, epochs=2)
    fake.step(1, 0.5, 0.5)
    fake.event("error", message="CUDA out of memory: tried to allocate 2.00 GiB",
               hint="cache text-encoder outputs (saves 1.6 GiB); batch size 1 (saves 0.8 GiB)", step=1)
    fake.event("end", reason="error", step=1)
    fake.status("failed", step=1)
    app = monitor_app(tmp_path, fake.run)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await on_monitor(pilot)
        await wait_for(pilot, lambda: "CUDA out of memory" in screen_text(app))
        text = screen_text(app)
        assert "error: CUDA out of memory: tried to allocate 2.00 GiB" in text
        assert "hint: cache text-encoder outputs (saves 1.6 GiB); batch size 1 (saves 0.8 GiB)" in text
        assert "failed" in text
        for command in Command:
            assert screen.check_action("command", (command.value,)) is None
        await pilot.press("s", "x")
        assert not isinstance(app.screen, ConfirmDialog)
        assert not (fake.run.commands_dir / "sample").exists()
        assert screen.check_action("detach", ()) and screen.check_action("folder", ())


async def test_commands_drop_files_stop_asks_first_and_keys_come_back_when_taken(tmp_path: Path):
    fake = FakeRun(tmp_path / "ws")
    fake.status("training", step=1, total_steps=10)
    fake.step(1, 0.5, 0.5)
    app = monitor_app(tmp_path, fake.run)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await on_monitor(pilot)
        await wait_for(pilot, lambda: screen.state == "training")
        await pilot.press("s")
        assert (fake.run.commands_dir / "sample").exists()
        assert screen.check_action("command", ("sample",)) is None
        assert screen.check_action("command", ("backup",)) is True
        await pilot.press("b", "v")
        assert {path.name for path in fake.run.commands_dir.iterdir()} == {"sample", "backup", "save"}
        for name in ("sample", "backup", "save"):
            (fake.run.commands_dir / name).unlink()
        await wait_for(pilot, lambda: screen.check_action("command", ("sample",)) is True)
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        assert "Stop demo-" in screen_text(app)
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is screen)
        assert not (fake.run.commands_dir / "stop").exists()
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("enter")
        await wait_for(pilot, lambda: (fake.run.commands_dir / "stop").exists())
        assert screen.check_action("command", ("stop",)) is None


async def test_a_dead_trainer_shows_as_crashed_with_a_resume_hint(tmp_path: Path):
    fake = FakeRun(tmp_path / "ws")
    fake.status("training", step=2, total_steps=10, pid=dead_pid())
    fake.step(1, 0.5, 0.5)
    fake.step(2, 0.4, 0.45)
    app = monitor_app(tmp_path, fake.run)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await on_monitor(pilot)
        await wait_for(pilot, lambda: "crashed:" in screen_text(app))
        assert screen.state == "crashed"
        assert "hint: resume it from its last backup" in screen_text(app)
        assert screen.check_action("command", ("stop",)) is None


async def test_phase_bars_show_caching_counts_and_the_run_bar(tmp_path: Path):
    fake = FakeRun(tmp_path / "ws")
    fake.status("caching", step=0)
    fake.event("start", total_steps=10, epochs=2)
    fake.event("cache_progress", kind="latents", done=2, total=20, hits=2)
    fake.event("cache_progress", kind="latents", done=6, total=20, hits=2)
    app = monitor_app(tmp_path, fake.run)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await on_monitor(pilot)
        progress = screen.query_one(RunProgress)
        await wait_for(pilot, lambda: progress.phase_text is not None and "6/20" in progress.phase_text)
        assert progress.phase_text == "caching latents 6/20 (2 reused) ETA 0:00:04"
        assert "caching latents 6/20 (2 reused)" in screen_text(app)
        assert screen.check_action("command", ("sample",)) is None and screen.check_action("command", ("stop",))
        fake.status("loading", step=0)
        await wait_for(pilot, lambda: progress.phase_text == "loading model")
        fake.status("training", step=1, total_steps=10)
        fake.step(1, 0.5, 0.5)
        await wait_for(pilot, lambda: progress.phase_text is None)
        assert "run 1/10 steps" in screen_text(app)


async def test_latest_samples_show_with_their_prompts(tmp_path: Path):
    fake = FakeRun(tmp_path / "ws")
    fake.status("training", step=4, total_steps=10)
    for step in (2, 4):
        for index, colour in enumerate(("red", "blue")):
            Image.new("RGB", (64, 64), colour).save(fake.run.samples_dir / f"step-{step:06d}-{index}.png")
    app = monitor_app(tmp_path, fake.run)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await on_monitor(pilot)
        view = screen.query_one(SampleView)
        await wait_for(pilot, lambda: '"a blue square"' in screen_text(app))
        assert [sample.path.name for sample in view.samples] == ["step-000004-0.png", "step-000004-1.png"]
        text = screen_text(app)
        assert "Latest sample (step 4)" in text and '"a red circle"' in text
        extra = fake.run.samples_dir / "custom.png"
        Image.new("RGB", (48, 80), "green").save(extra)
        fake.event("sample", step=6, paths=[str(extra)], prompts=["a green tree"])
        await wait_for(pilot, lambda: '"a green tree"' in screen_text(app))
        assert [sample.path for sample in view.samples] == [extra] and "Latest sample (step 6)" in screen_text(app)


async def test_log_view_tails_train_log_and_keeps_a_capped_number_of_lines(tmp_path: Path):
    fake = FakeRun(tmp_path / "ws")
    fake.status("training", step=0)
    fake.log(*(f"line {index}" for index in range(LOG_LINES + 50)))
    app = monitor_app(tmp_path, fake.run)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await on_monitor(pilot)
        log = screen.query_one(LogView)
        await wait_for(pilot, lambda: log.line_count == LOG_LINES)
        assert log.lines[0] == "line 50" and log.lines[-1] == f"line {LOG_LINES + 49}"
        fake.log("10:42:01 step 1/10 loss 0.1012")
        await wait_for(pilot, lambda: log.lines[-1] == "10:42:01 step 1/10 loss 0.1012")
        assert log.line_count == LOG_LINES
        await wait_for(pilot, lambda: "10:42:01 step 1/10 loss 0.1012" in screen_text(app))


async def test_a_newer_trainers_event_kind_and_fields_show_as_text_in_the_log(tmp_path: Path):
    """Events this viewer does not know never break the screen: each unknown kind is a log line, a known kind's new
    fields are one log line the first time they appear, and the known fields still show."""
    fake = FakeRun(tmp_path / "ws")
    fake.status("training", step=0, total_steps=10)
    fake.event("start", total_steps=10, epochs=2)
    fake.event("grad_norm", step=1, norm=1.25)
    fake.step(1, 0.5, 0.5, ema_loss=0.45)
    fake.step(2, "0.25", 0.4, ema_loss=0.4)
    fake.log("12:00:00 step 2/10 loss 0.2500")
    app = monitor_app(tmp_path, fake.run)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await on_monitor(pilot)
        log = screen.query_one(LogView)
        await wait_for(pilot, lambda: log.line_count >= 4)
        unknown = f'event this viewer does not know: {{"type": "grad_norm", "time": {fake.clock - 2.0}, "step": 1, "norm": 1.25}}'
        assert list(log.lines) == [
            unknown,
            'step event with fields this viewer does not know: {"ema_loss": 0.45}',
            'step event with fields this viewer does not know: {"loss": "0.25", "ema_loss": 0.4}',
            "12:00:00 step 2/10 loss 0.2500",
        ]
        fake.step(3, 0.2, 0.3, ema_loss=0.3)
        await wait_for(pilot, lambda: "step 3/10" in screen_text(app))
        assert log.line_count == 4  # the same new field again: no new line
        assert screen.summary.step == 3 and list(screen.query_one(LossChart).steps) == [1, 3]
        await wait_for(pilot, lambda: "grad_norm" in screen_text(app))


async def test_a_resumed_run_replaces_the_chart_from_the_resumed_step(tmp_path: Path):
    fake = FakeRun(tmp_path / "ws")
    fake.status("training", step=5, total_steps=10)
    for step in range(1, 6):
        fake.step(step, 1.0, 1.0)
    fake.event("start", total_steps=10, epochs=2)
    fake.event("resume", step=3, epoch=1, batch_index=3, total_steps=10)
    for step in range(4, 7):
        fake.step(step, 0.5, 0.5)
    app = monitor_app(tmp_path, fake.run)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await on_monitor(pilot)
        chart = screen.query_one(LossChart)
        await wait_for(pilot, lambda: chart.points == 6)
        assert list(chart.steps) == [1, 2, 3, 4, 5, 6] and list(chart.raw) == [1, 1, 1, 0.5, 0.5, 0.5]


async def test_detach_quits_attach_mode_and_the_folder_key_shows_the_path(tmp_path: Path):
    fake = FakeRun(tmp_path / "ws")
    fake.status("training", step=0)
    app = monitor_app(tmp_path, fake.run)
    async with app.run_test(size=(120, 40)) as pilot:
        await on_monitor(pilot)
        await pilot.press("o")
        await wait_for(pilot, lambda: app.clipboard == str(fake.run.path))
        assert [note.message for note in app._notifications] == [str(fake.run.path)]
        await pilot.press("d")
        await wait_for(pilot, lambda: app._exit)
    assert not fake.run.commands_dir.joinpath("stop").exists()


async def test_attaching_to_a_long_run_reads_its_whole_history(tmp_path: Path):
    fake = FakeRun(tmp_path / "ws")
    fake.status("finished", step=30_000, total_steps=30_000)
    lines = (json.dumps({"type": "step", "time": fake.clock, "step": step, "total_steps": 30_000, "loss": 1 / step,
                         "smoothed_loss": 1 / step}) for step in range(1, 30_001))
    fake.run.events_file.write_text("\n".join(lines) + "\n")
    app = monitor_app(tmp_path, fake.run)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: "30000 steps · last 0.0000" in screen_text(app))
        chart = app.screen.query_one(LossChart)
        assert chart.points == 30_000 and chart.steps[0] == 1 and "step 30000/30000" in screen_text(app)


def test_column_extremes_keep_a_single_spike_and_means_fit_the_columns():
    x = np.arange(1, 100_001, dtype=np.float64)
    y = np.full_like(x, 0.1)
    y[54_321] = 9.0
    middle, low, high = column_extremes(x, y, 200)
    assert len(middle) == 200 and high.max() == 9.0 and np.count_nonzero(high > 1) == 1 and low.max() == 0.1
    assert np.all(np.diff(middle) > 0) and middle[0] > 1 and middle[-1] < 100_000
    mx, my = column_means(x, y, 200)
    assert len(mx) == 200 and my.max() < 1.0
    assert len(column_means(x[:10], y[:10], 200)[0]) == 10


def test_braille_band_fills_each_pixel_column_and_joins_neighbours():
    first, last = band_rows(np.array([0, 1, 2, 3]), np.array([0, 6, 0, 0]), np.array([1, 7, 0, 0]), 4)
    assert first.tolist() == [0, 2, 0, 0] and last.tolist() == [1, 7, 5, 0]
    cells = braille_cells(first, last, 2)
    assert cells.shape == (2, 2)
    assert chr(0x2800 + int(cells[0, 0])) == "⢣"  # dots 1, 2 (left column, rows 0-1) and 6, 8 (right, rows 2-3)
    assert chr(0x2800 + int(cells[1, 0])) == "⢸"  # left empty, right column rows 4-7: dots 4, 5, 6, 8
    assert chr(0x2800 + int(cells[1, 1])) == "⠃"  # third pixel column rows 4-5: dots 1, 2


async def test_chart_with_100k_points_draws_a_band_per_pixel_column(tmp_path: Path):
    fake = FakeRun(tmp_path / "ws")
    fake.status("finished", step=100_000)
    app = monitor_app(tmp_path, fake.run)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await on_monitor(pilot)
        chart = screen.query_one(LossChart)
        rng = np.random.default_rng(0)
        for step, loss in enumerate(rng.random(100_000).tolist(), start=1):
            chart.add(step, loss, 0.5)
        chart.redraw()
        assert chart.points == 100_000
        assert 0 < chart.drawn_points <= 3 * chart.columns
        await wait_for(pilot, lambda: "100000 steps" in screen_text(app))
        assert "⣿" in screen_text(app)


def test_log_tail_waits_for_the_newline_and_starts_near_the_end(tmp_path: Path):
    path = tmp_path / "train.log"
    path.write_text("a" * 100 + "\nfirst\nsecond\npart")
    tail = LogTail(path, start_bytes=20)
    assert tail.read_new() == ["first", "second"]
    with open(path, "a") as handle:
        handle.write("ial\n")
    assert tail.read_new() == ["partial"]
    assert tail.read_new() == []


def test_latest_samples_prefers_the_sample_event(tmp_path: Path):
    run = create_run_dir(tmp_path, "r", CONFIG)
    Image.new("RGB", (8, 8)).save(run.samples_dir / "step-000003-1.png")
    summary = RunSummary()
    (only,) = latest_samples(run, summary, ["a red circle", "a blue square"])
    assert (only.step, only.prompt) == (3, "a blue square")
    summary.apply(SampleEvent(time=time.time(), step=5, paths=[str(run.samples_dir / "step-000005-0.png")]))
    (only,) = latest_samples(run, summary, ["a red circle", "a blue square"])
    assert (only.step, only.prompt) == (5, "a red circle")


# runs browser


def browser_app(tmp_path: Path, workspace: Path):
    return make_app(tmp_path, initial_screen=lambda: RunsBrowserScreen(workspace, refresh_interval=0.1))


def three_runs(workspace: Path) -> dict[str, FakeRun]:
    runs = {}
    for name, state in (("done", "finished"), ("dead", "training"), ("live", "training")):
        fake = FakeRun(workspace, name)
        fake.event("start", total_steps=10, epochs=2, family="sd15", method="lora")
        fake.step(1, 0.25, 0.25)
        fake.step(2, 0.125, 0.2)
        fake.status(state, step=2, total_steps=10, **({"pid": dead_pid()} if name == "dead" else {}))
        runs[name] = fake
    return runs


async def select_run(pilot, screen: RunsBrowserScreen, fake: FakeRun) -> None:
    from textual.widgets import DataTable

    table = screen.query_one(DataTable)
    table.move_cursor(row=table.get_row_index(str(fake.run.path)))
    await wait_for(pilot, lambda: screen.selected is not None and screen.selected.run == fake.run)


async def test_browser_lists_runs_with_state_step_loss_and_duration(tmp_path: Path):
    runs = three_runs(tmp_path / "ws")
    app = browser_app(tmp_path, tmp_path / "ws")
    async with app.run_test(size=(140, 30)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, RunsBrowserScreen) and app.screen.loaded)
        text = screen_text(app)
        for name, state in (("done", "finished"), ("dead", "crashed"), ("live", "training")):
            line = next(line for line in text.splitlines() if runs[name].run.name in line)
            assert state in line and "sd15/lora" in line and "2/10" in line and "0.1250" in line
        done = next(line for line in text.splitlines() if runs["done"].run.name in line)
        assert "0:00:02" in done  # first event (start) to last event (step 2), 1 s apart each


async def test_browser_never_deletes_a_running_run_and_deletes_a_finished_one_after_confirming(tmp_path: Path):
    runs = three_runs(tmp_path / "ws")
    app = browser_app(tmp_path, tmp_path / "ws")
    async with app.run_test(size=(140, 30)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, RunsBrowserScreen) and app.screen.loaded)
        screen = app.screen
        await select_run(pilot, screen, runs["live"])
        assert screen.check_action("delete", ()) is None and screen.check_action("resume", ()) is None
        await pilot.press("delete")
        assert not isinstance(app.screen, ConfirmDialog)
        await select_run(pilot, screen, runs["done"])
        assert screen.check_action("delete", ()) is True
        await pilot.press("delete")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is screen)
        assert runs["done"].run.path.exists()
        await pilot.press("delete")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("enter")
        await wait_for(pilot, lambda: not runs["done"].run.path.exists() and runs["done"].run.name not in screen_text(app))
        assert runs["live"].run.path.exists() and runs["dead"].run.path.exists()


async def test_browser_resumes_a_crashed_run_with_more_epochs(tmp_path: Path, monkeypatch):
    runs = three_runs(tmp_path / "ws")
    config = load_preset("sd15-lora")
    config.training.epochs = 2
    runs["dead"].run.config_file.write_text(dump_config(config))
    resumed: list[RunDir] = []
    monkeypatch.setattr("tui_trainer.tui.screens.runs_browser.resume_run", lambda run: resumed.append(run) or 1)
    app = browser_app(tmp_path, tmp_path / "ws")
    async with app.run_test(size=(140, 30)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, RunsBrowserScreen) and app.screen.loaded)
        screen = app.screen
        await select_run(pilot, screen, runs["dead"])
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, ResumeDialog))
        assert "Stopped at step 2 of 2 epochs" in screen_text(app)
        await pilot.press("end", "backspace", "1")
        await pilot.press("enter")
        assert isinstance(app.screen, ResumeDialog) and "type a whole number >= 2" in screen_text(app)
        await pilot.press("backspace", "5", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, RunMonitorScreen))
        assert resumed == [runs["dead"].run]
        assert load_config(runs["dead"].run.config_file).training.epochs == 5
        await pilot.press("d")
        await wait_for(pilot, lambda: app.screen is screen)


async def test_browser_attaches_and_opens_the_config_in_the_editor(tmp_path: Path):
    runs = three_runs(tmp_path / "ws")
    runs["done"].run.config_file.write_text(dump_config(load_preset("sd15-lora")))
    app = browser_app(tmp_path, tmp_path / "ws")
    async with app.run_test(size=(140, 30)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, RunsBrowserScreen) and app.screen.loaded)
        screen = app.screen
        await select_run(pilot, screen, runs["done"])
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, RunMonitorScreen) and app.screen.polls > 0)
        await wait_for(pilot, lambda: "step 2/10" in screen_text(app))
        await pilot.press("r")
        await wait_for(pilot, lambda: app.screen is screen)
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, EditorScreen))
        assert app.screen.document.path == runs["done"].run.config_file.resolve()


# starting from the editor, and the CLI


def runnable_config(tmp_path: Path) -> Path:
    """A valid preset config with a relative dataset folder and workspace."""
    config = load_preset("sd15-lora")
    config.concepts = [ConceptConfig(name="shapes", path="data")]
    config.workspace.dir = "ws"
    path = tmp_path / "cfg" / "tiny.toml"
    path.parent.mkdir()
    make_dataset(path.parent / "data", ((64, 64, 2),))
    path.write_text(dump_config(config))
    return path


async def test_start_saves_launches_with_absolute_paths_and_shows_the_run(tmp_path: Path, monkeypatch):
    config_path = runnable_config(tmp_path)
    launched: list[tuple[Path, str, str]] = []

    def fake_launch(workspace, name, text):
        launched.append((Path(workspace), name, text))
        run = create_run_dir(workspace, name, text)
        write_status(run, state="starting")
        return run

    monkeypatch.setattr("tui_trainer.tui.run_start.launch_run", fake_launch)
    app = make_app(tmp_path, config_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, EditorScreen))
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: isinstance(app.screen, RunMonitorScreen))
        ((workspace, name, text),) = launched
        assert workspace == config_path.parent / "ws" and name == "sd15-lora"
        started = parse_config(text)
        assert started.concepts[0].path == str(config_path.parent / "data")
        assert "starting" in screen_text(app)
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, EditorScreen))


async def test_start_with_a_missing_dataset_lists_the_problem_and_launches_nothing(tmp_path: Path, monkeypatch):
    config_path = runnable_config(tmp_path)
    config_path.write_text(config_path.read_text().replace('path = "data"', 'path = "missing"'))
    monkeypatch.setattr("tui_trainer.tui.run_start.launch_run", lambda *args: pytest.fail("launched"))
    app = make_app(tmp_path, config_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, EditorScreen))
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: isinstance(app.screen, ProblemsDialog))
        assert "missing" in screen_text(app)


async def test_start_from_an_unsaved_wizard_asks_for_a_file_first(tmp_path: Path, monkeypatch):
    monkeypatch.setattr("tui_trainer.tui.run_start.launch_run", lambda *args: pytest.fail("launched"))
    app = make_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: type(app.screen).__name__ == "StartScreen")
        await pilot.press("pagedown")
        await wait_for(pilot, lambda: isinstance(app.screen, EditorScreen) and app.screen.document.path is None)
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: isinstance(app.screen, PathPrompt))
        assert "press ctrl+r again to start" in " ".join(note.message for note in app._notifications)


def test_attach_refuses_a_folder_that_is_not_a_run(tmp_path: Path, capsys):
    assert main(["attach", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_runs_workspace_from_a_folder_a_config_or_the_default(tmp_path: Path):
    config = tmp_path / "c.toml"
    config.write_text(dump_config(load_preset("sd15-lora")).replace('dir = "workspace"', 'dir = "elsewhere"'))
    assert runs_workspace(str(config)) == tmp_path / "elsewhere"
    assert runs_workspace(str(tmp_path)) == tmp_path
    assert runs_workspace(None) == Path("workspace")


STAND_IN_TRAINER = '''
import sys, time
from pathlib import Path
from PIL import Image
from tui_trainer.runs.commands import Command, consume_command, pending_commands
from tui_trainer.runs.events import BackupEvent, EndEvent, EventWriter, SampleEvent, StartEvent, StepEvent
from tui_trainer.runs.layout import RunDir
from tui_trainer.runs.status import write_status

run = RunDir(Path(sys.argv[sys.argv.index("--run-dir") + 1]))
events = EventWriter(run)
write_status(run, state="loading", step=0)
events.emit(StartEvent(total_steps=1000, epochs=10, family="sd15", method="lora", device="cpu"))
for step in range(1, 1001):
    time.sleep(0.02)
    events.emit(StepEvent(step=step, total_steps=1000, epoch=1, epochs=10, loss=1 / step, smoothed_loss=1 / step,
                          lr={"unet": 1e-4}, it_per_s=50.0, eta_s=(1000 - step) / 50))
    write_status(run, state="training", step=step, total_steps=1000)
    for command in pending_commands(run):
        consume_command(run, command)
        if command is Command.SAMPLE:
            path = run.samples_dir / f"step-{step:06d}-0.png"
            Image.new("RGB", (64, 64), "red").save(path)
            events.emit(SampleEvent(step=step, paths=[str(path)]))
        if command is Command.STOP:
            (run.backups_dir / f"step-{step:06d}").mkdir()
            events.emit(BackupEvent(step=step, path=str(run.backups_dir / f"step-{step:06d}")))
            events.emit(EndEvent(reason="stopped", step=step))
            write_status(run, state="finished", step=step)
            sys.exit(0)
'''


async def test_start_sample_and_stop_against_a_stand_in_trainer_process(tmp_path: Path, monkeypatch):
    """The whole loop through a real detached process that speaks the run-directory protocol (no torch)."""
    script = tmp_path / "stand_in_trainer.py"
    script.write_text(STAND_IN_TRAINER)
    monkeypatch.setattr("tui_trainer.runs.launch.trainer_command",
                        lambda config, run, resume=False: [sys.executable, str(script), str(config), "--run-dir", str(run.path)])
    config_path = runnable_config(tmp_path)
    app = make_app(tmp_path, config_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, EditorScreen))
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: isinstance(app.screen, RunMonitorScreen))
        screen = app.screen
        chart = screen.query_one(LossChart)
        await wait_for(pilot, lambda: chart.points >= 2 and screen.state == "training")
        first = screen.summary.step
        await wait_for(pilot, lambda: screen.summary.step > first and f"step {screen.summary.step}/1000" in screen_text(app))
        await pilot.press("s")
        await wait_for(pilot, lambda: screen.query_one(SampleView).samples)
        (sample,) = screen.query_one(SampleView).samples
        assert sample.prompt == "" and sample.path.parent == screen.run.samples_dir
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.state == "finished" and "finished" in screen_text(app))
        steps = screen.summary.step
        assert chart.points == steps and [path.name for path in screen.run.backups_dir.iterdir()] == [f"step-{steps:06d}"]
        assert all(screen.check_action("command", (command.value,)) is None for command in Command)

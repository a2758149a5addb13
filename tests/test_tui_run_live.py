"""Real tiny training runs driven from the TUI: Pilot (start, chart, sample now, stop) and tmux (SIGHUP, attach)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

from test_tui_tmux import Tmux
from train_support import write_config
from tui_support import make_app, screen_text, wait_for
from tui_trainer.cli import build_parser
from tui_trainer.runs.commands import Command, send_command
from tui_trainer.runs.events import StepEvent, read_events
from tui_trainer.runs.layout import RunDir, list_runs
from tui_trainer.runs.status import pid_alive, read_status
from tui_trainer.tui.screens.confirm import ConfirmDialog
from tui_trainer.tui.screens.editor import EditorScreen
from tui_trainer.tui.screens.run_monitor import RunMonitorScreen
from tui_trainer.tui.widgets.loss_chart import LossChart
from tui_trainer.tui.widgets.sample_view import SampleView


def trainer_takes_run_dir() -> bool:
    """Whether `tui-trainer train` accepts --run-dir and --resume (what runs/launch.py calls)."""
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            build_parser().parse_args(["train", "c.toml", "--run-dir", "r", "--resume", "r"])
        except SystemExit:
            return False
    return True


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not trainer_takes_run_dir(), reason=(
        "needs issue 7 in the trainer: `tui-trainer train CONFIG --run-dir RUN_DIR` (called by runs/launch.py), "
        "command files (sample, stop), samples/ and backups/")),
]

SAMPLES = '\n[[samples]]\nprompt = "red, circle"\nwidth = 64\nheight = 64\nsteps = 2\nseed = 1\n'


@pytest.fixture
def live_config(tmp_path: Path, tiny_sd15: Path, monkeypatch) -> Path:
    """A tiny LoRA run long enough to be stopped by hand (2000 steps), with one sample prompt."""
    from tui_trainer.devkit.datasets import make_dataset

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the detached trainer inherits it: steady steps on a busy machine
    data = make_dataset(tmp_path / "data", ((64, 64, 4),))
    path = write_config(tmp_path, tiny_sd15, data, training=(
        'resolution = "64"\nbatch_size = 2\nepochs = 1000\nmax_steps = 2000\ngradient_checkpointing = false\n'
        "cache_latents = false\ndataloader_workers = 0\ntensorboard = false\nseed = 7"))
    path.write_text(path.read_text() + SAMPLES)
    return path


def only_run(workspace: Path) -> RunDir:
    (run,) = list_runs(workspace)
    return run


def steps_written(run: RunDir) -> int:
    return sum(isinstance(event, StepEvent) for event in read_events(run.events_file))


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.1)


def kill_trainer(workspace: Path) -> None:
    for run in list_runs(workspace):
        pid = read_status(run).get("pid")
        if isinstance(pid, int) and pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


async def test_a_real_run_from_the_editor_samples_on_request_and_stops_with_a_final_backup(tmp_path: Path, live_config: Path):
    app = make_app(tmp_path, live_config)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, EditorScreen))
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: isinstance(app.screen, RunMonitorScreen))
            screen = app.screen
            chart = screen.query_one(LossChart)
            await wait_for(pilot, lambda: chart.points >= 1 and screen.state == "training", timeout=60)
            first = screen.summary.step
            await wait_for(pilot, lambda: screen.summary.step > first and f"step {screen.summary.step}/2000" in screen_text(app))
            assert chart.points == screen.summary.step
            await pilot.press("s")
            await wait_for(pilot, lambda: screen.query_one(SampleView).samples, timeout=30)
            (sample,) = screen.query_one(SampleView).samples
            assert sample.path.is_file() and sample.prompt == "red, circle"
            await wait_for(pilot, lambda: '"red, circle"' in screen_text(app))
            await pilot.press("x")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
            await pilot.press("enter")
            await wait_for(pilot, lambda: screen.state == "stopped" and screen.summary.end is not None, timeout=30)
            await wait_for(pilot, lambda: "stopped" in screen_text(app))
            run = screen.run
            steps = steps_written(run)
            assert 0 < steps < 2000 and chart.points == steps
            assert screen.summary.end.reason == "stopped" and screen.summary.backups[-1].step == steps
            assert (run.backups_dir / f"step-{steps:06d}").is_dir()
            for command in Command:
                assert screen.check_action("command", (command.value,)) is None
    finally:
        kill_trainer(tmp_path / "ws")


@pytest.mark.tmux
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (CI installs it in .ci/run)")
def test_losing_the_terminal_leaves_the_trainer_running_and_attach_shows_the_whole_history(tmp_path: Path, live_config: Path):
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "TERM": "xterm-256color"}
    command = shutil.which("tui-trainer") or f"{sys.executable} -m tui_trainer.cli"
    workspace = tmp_path / "ws"
    first = Tmux(f"{command} {live_config}", tmp_path, env, size=(120, 40))
    second = None
    try:
        first.wait_for(lambda text: "Model & method" in text)
        first.keys("C-r")
        first.wait_for(lambda text: re.search(r"step \d+/2000", text) and "training" in text, timeout=60)
        run = only_run(workspace)
        pid = read_status(run)["pid"]
        first.kill()  # the terminal goes away: the TUI gets SIGHUP
        at_hangup = steps_written(run)
        wait_until(lambda: steps_written(run) > at_hangup + 3, 30, "the trainer keeps writing steps after SIGHUP")
        assert pid_alive(pid) and read_status(run)["state"] == "training"
        second = Tmux(f"{command} attach {run.path}", tmp_path, env, size=(120, 40))
        text = second.wait_for(lambda text: re.search(r"(\d+) steps · last", text), timeout=20)
        shown = int(re.search(r"(\d+) steps · last", text)[1])
        assert shown > at_hangup + 3 and int(re.search(r"step (\d+)/2000", text)[1]) == shown
        send_command(run, Command.STOP)
        second.wait_for(lambda text: "stopped" in text, timeout=30)
        second.keys("d")
        second.wait_closed()
    finally:
        first.kill()
        if second is not None:
            second.kill()
        kill_trainer(workspace)

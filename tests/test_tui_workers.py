"""The TUI's one worker error policy: a worker that raises shows its error on screen and the app goes on."""

from __future__ import annotations

from pathlib import Path

from tui_support import make_app, screen_text, services, wait_for
from tui_trainer.config import dump_config, load_preset
from tui_trainer.runs.layout import create_run_dir
from tui_trainer.tui.screens.editor import EditorScreen
from tui_trainer.tui.screens.run_monitor import RunMonitorScreen
from tui_trainer.tui.services import Services


def broken_estimate(config, gpu=None, *, target_bytes=None):
    raise RuntimeError("estimator exploded")


async def test_a_failing_run_screen_worker_shows_its_error_and_the_screen_stays(tmp_path: Path):
    run = create_run_dir(tmp_path / "ws", "demo", dump_config(load_preset("sd15-lora")))
    app = make_app(tmp_path, services=services(estimate=broken_estimate),
                   initial_screen=lambda: RunMonitorScreen(run, poll_interval=0.05))
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await wait_for(pilot, lambda: "estimator exploded" in screen_text(app))
        assert "VRAM estimate failed" in screen_text(app)
        assert isinstance(app.screen, RunMonitorScreen) and app.is_running
        assert app.screen.estimate_bytes is None


async def test_a_failing_editor_worker_shows_its_error(tmp_path: Path):
    def broken_probe():
        raise OSError("no NVML here")

    config_path = tmp_path / "run.toml"
    config_path.write_text(dump_config(load_preset("sd15-lora")))
    real = services()
    app = make_app(tmp_path, config_path, services=Services(estimate=real.estimate, probe_gpus=broken_probe,
                                                            build_report=real.build_report))
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await wait_for(pilot, lambda: "no NVML here" in screen_text(app))
        assert "GPU probe failed" in screen_text(app)
        assert isinstance(app.screen, EditorScreen)

"""The run screen rings the terminal (bell, OSC 9, OSC 777) when a run it watched live ends; notify.terminal = false
turns it off; a run that had already ended when opened rings nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from test_tui_runs import FakeRun, monitor_app, next_poll, on_monitor
from tui_support import wait_for
from tui_trainer.tui.terminal_alert import alert_text


def test_alert_text_has_the_bell_and_both_osc_forms_and_no_stray_separators():
    text = alert_text("tui-trainer demo", "failed; at\nstep 3")
    assert text == "\a\x1b]9;tui-trainer demo: failed  at step 3\a\x1b]777;notify;tui-trainer demo;failed  at step 3\a"
    wrapped = alert_text("t", "b", in_tmux=True)
    assert wrapped.startswith("\a\x1bPtmux;\x1b\x1b]9;t: b\a\x1b\\")


def recorded_writes(app) -> list[str]:
    written: list[str] = []
    app._driver.write = written.append
    return written


@pytest.mark.parametrize(("config", "alerted"), [("", True), ("[notify]\nterminal = false\n", False)])
async def test_a_run_seen_live_alerts_when_it_fails_unless_turned_off(tmp_path: Path, config: str, alerted: bool):
    fake = FakeRun(tmp_path / "ws", config=config)
    fake.status("training", step=2, total_steps=10)
    fake.step(2, 0.5, 0.5)
    app = monitor_app(tmp_path, fake.run)
    async with app.run_test(size=(120, 40)) as pilot:
        written = recorded_writes(app)
        screen = await on_monitor(pilot)
        fake.event("error", message="CUDA out of memory", hint="lower the batch size")
        fake.status("failed", step=3)
        await wait_for(pilot, lambda: screen.state == "failed")
        await next_poll(pilot, screen)
        expected = [alert_text(f"tui-trainer {fake.run.name}", "failed at step 2: CUDA out of memory")] if alerted else []
        assert screen.alerts == expected
        assert [text for text in written if "\x1b]777;" in text] == expected


async def test_a_run_that_had_ended_before_opening_rings_nothing(tmp_path: Path):
    fake = FakeRun(tmp_path / "ws")
    fake.step(10, 0.5, 0.5)
    fake.status("finished", step=10)
    app = monitor_app(tmp_path, fake.run)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await on_monitor(pilot)
        await next_poll(pilot, screen)
        assert screen.state == "finished" and screen.alerts == []

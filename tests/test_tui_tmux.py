"""The app in a real terminal under tmux, driven with send-keys as a person over SSH would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tui_trainer.config import load_config, load_preset

pytestmark = [
    pytest.mark.tmux,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (CI installs it in .ci/run)"),
]


class Tmux:
    """One tmux server on a private socket with one window running a command."""

    def __init__(self, command: str, cwd: Path, env: dict[str, str], size: tuple[int, int] = (100, 30)) -> None:
        self.socket = f"tui-trainer-test-{uuid.uuid4().hex[:8]}"
        width, height = size
        self._tmux("new-session", "-d", "-s", "main", "-x", str(width), "-y", str(height), "-c", str(cwd), command,
                   env=env)

    def _tmux(self, *args: str, env: dict[str, str] | None = None) -> str:
        result = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, env=env,
                                check=True)
        return result.stdout

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "main", *keys)

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "main")

    def wait_for(self, condition, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if condition(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout}s; screen:\n{text}")
            time.sleep(0.1)

    def running(self) -> bool:
        return subprocess.run(["tmux", "-L", self.socket, "has-session", "-t", "main"], capture_output=True).returncode == 0

    def wait_closed(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.running():
            if time.monotonic() > deadline:
                raise AssertionError(f"the app did not exit within {timeout}s; screen:\n{self.screen()}")
            time.sleep(0.1)

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


def test_wizard_in_a_real_terminal_writes_the_file(tmp_path: Path):
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "TERM": "xterm-256color"}
    command = shutil.which("tui-trainer") or f"{sys.executable} -m tui_trainer.cli"
    tmux = Tmux(command, tmp_path, env)
    try:
        tmux.wait_for(lambda text: "New run" in text and "Start wizard" in text)
        tmux.keys("NPage")
        tmux.wait_for(lambda text: "Model & method" in text and "Base model" in text)
        for _ in range(10):
            tmux.keys("NPage")
        review = tmux.wait_for(lambda text: "Ready to save" in text)
        assert "Errors (fix these to save): none" in review
        assert "concepts: no enabled concept" in review
        tmux.keys("NPage")
        tmux.wait_for(lambda text: "Save as" in text)
        tmux.keys("Enter")
        target = tmp_path / "sd15-lora.toml"
        tmux.wait_for(lambda text: target.exists() and "sd15-lora.toml  editor" in text)
        assert load_config(target) == load_preset("sd15-lora")
        tmux.keys("C-q")
        tmux.wait_closed()
    finally:
        tmux.kill()

"""The config subcommands of the CLI, run as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui_trainer.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("tui-trainer ")


def test_presets_lists_every_preset():
    result = run_cli("presets")
    assert result.returncode == 0
    assert "sdxl-lora" in result.stdout and "sd21-lora" in result.stdout


def test_presets_are_listed_in_aligned_columns():
    """Long names (qwen-image-lora-16gb, pixart_alpha, embedding) keep every column starting at one place."""
    import re

    lines = run_cli("presets").stdout.splitlines()
    assert ["qwen-image-lora-16gb", "qwen_image", "lora", "Qwen/Qwen-Image"] in [line.split() for line in lines]
    assert len({tuple(field.start() for field in re.finditer(r"\S+", line)) for line in lines}) == 1


@pytest.mark.parametrize("buffered", [True, False])
def test_output_into_a_reader_that_stopped_ends_without_a_traceback(buffered: bool):
    """`tui-trainer presets | head -1` once head has exited: the pipe has no reader left."""
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}
    if not buffered:
        environment["PYTHONUNBUFFERED"] = "1"
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run([sys.executable, "-m", "tui_trainer.cli", "presets"], stdout=write_end,
                                stderr=subprocess.PIPE, text=True, env=environment, timeout=60)
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (1, "")


def test_config_new_then_validate(tmp_path: Path):
    target = tmp_path / "my.toml"
    assert run_cli("config", "new", "--preset", "sdxl-lora", "-o", str(target)).returncode == 0
    result = run_cli("config", "validate", str(target))
    assert result.returncode == 0 and result.stdout.strip().endswith("ok")
    again = run_cli("config", "new", "--preset", "sdxl-lora", "-o", str(target))
    assert again.returncode == 2 and "already exists" in again.stderr


def test_validate_bad_file_exits_2_with_the_error(tmp_path: Path):
    target = tmp_path / "bad.toml"
    target.write_text('[model]\nbase_model = "x"\n[training]\nbatch_size = 0\n')
    result = run_cli("config", "validate", str(target))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {target}: training.batch_size: 0 is out of range; allowed: >= 1 and <= 256"


def test_unknown_preset(tmp_path: Path):
    result = run_cli("config", "new", "--preset", "sd9-lora", "-o", str(tmp_path / "x.toml"))
    assert result.returncode == 2 and "unknown preset 'sd9-lora'; allowed:" in result.stderr

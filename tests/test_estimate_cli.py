"""GPU probe (no GPU here, and a simulated one) and `tui-trainer estimate`."""

from __future__ import annotations

import json
import sys
import types

import pytest

from tui_trainer.cli import main
from tui_trainer.estimate import NO_GPU_MESSAGE, GpuInfo, probe_gpus
from tui_trainer.estimate.report import parse_size

GIB = 1024**3


def test_probe_without_nvidia_reports_no_gpu_and_ram():
    probe = probe_gpus()
    if probe.gpus:
        pytest.skip("this machine has an NVIDIA GPU")
    assert probe.message.startswith(NO_GPU_MESSAGE)
    assert probe.ram_total_bytes > 0 and 0 < probe.ram_available_bytes <= probe.ram_total_bytes


def _fake_pynvml(count: int = 1, fail_init: bool = False) -> types.ModuleType:
    nvml = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    def init():
        if fail_init:
            raise NVMLError("Driver Not Loaded")

    nvml.nvmlInit = init
    nvml.nvmlShutdown = lambda: None
    nvml.nvmlSystemGetDriverVersion = lambda: b"550.54.14"
    nvml.nvmlDeviceGetCount = lambda: count
    nvml.nvmlDeviceGetHandleByIndex = lambda index: index
    nvml.nvmlDeviceGetName = lambda handle: f"NVIDIA GeForce RTX 4090 #{handle}"
    nvml.nvmlDeviceGetMemoryInfo = lambda handle: types.SimpleNamespace(total=24 * GIB, free=21 * GIB, used=3 * GIB)
    nvml.nvmlDeviceGetCudaComputeCapability = lambda handle: (8, 9)
    return nvml


def test_probe_reads_every_gpu_through_nvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(count=2))
    probe = probe_gpus()
    assert probe.gpus == [
        GpuInfo(i, f"NVIDIA GeForce RTX 4090 #{i}", 24 * GIB, 21 * GIB, 3 * GIB, (8, 9), "550.54.14") for i in range(2)
    ]
    assert "GPU 0: NVIDIA GeForce RTX 4090 #0 24.0 GiB (21.0 free)" in probe.message


def test_probe_with_a_broken_driver_never_raises(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(fail_init=True))
    probe = probe_gpus()
    assert probe.gpus == [] and probe.message == f"{NO_GPU_MESSAGE} (NVMLError: Driver Not Loaded)"
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(count=0))
    assert probe_gpus().message == NO_GPU_MESSAGE


def test_parse_size():
    assert parse_size("24GiB") == 24 * GIB
    assert parse_size("24 GB") == 24 * 1000**3
    assert parse_size("11.5") == round(11.5 * GIB)
    assert parse_size("800MiB") == 800 * 1024**2
    with pytest.raises(ValueError, match="not a size"):
        parse_size("24XB")


@pytest.fixture
def sdxl_config(tmp_path):
    path = tmp_path / "sdxl.toml"
    assert main(["config", "new", "--preset", "sdxl-lora", "-o", str(path)]) == 0
    return path


def test_cli_estimate_json(sdxl_config, capsys):
    capsys.readouterr()
    assert main(["estimate", str(sdxl_config), "--json", "--gpu-memory", "24GiB"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["fits"] is True and data["budget_bytes"] == 24 * GIB
    assert data["total_bytes"] == sum(data["breakdown"].values())
    assert data["parts"]["unet"]["params"] == 2_567_463_684
    assert data["parts"]["text_encoder_2"]["resident"] is False
    assert all(s["saves_bytes"] > 0 for s in data["suggestions"])


def test_cli_estimate_text(sdxl_config, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(fail_init=True))
    capsys.readouterr()
    assert main(["estimate", str(sdxl_config), "--gpu-memory", "6GiB"]) == 0
    out = capsys.readouterr().out
    assert "does NOT fit" in out and "to use less VRAM:" in out and "parts.denoiser.dtype = 'nf4'" in out
    assert main(["estimate", str(sdxl_config)]) == 0
    assert "budget: none (no NVIDIA GPU detected" in capsys.readouterr().out


def test_cli_estimate_rejects_a_bad_size(sdxl_config, capsys):
    assert main(["estimate", str(sdxl_config), "--gpu-memory", "lots"]) == 2
    assert "--gpu-memory" in capsys.readouterr().err

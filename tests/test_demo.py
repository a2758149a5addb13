"""`tui-trainer demo --headless`: the newcomer's first run, end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_headless_demo_trains_a_lora_that_diffusers_loads(tmp_path: Path):
    import torch
    from diffusers import StableDiffusionPipeline

    folder = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "tui_trainer.cli", "demo", "--headless", "--dir", str(folder), "--max-steps", "4"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "step 4/4" in result.stdout
    loras = sorted((folder / "workspace" / "runs").glob("demo-lora-*/output/demo-lora.safetensors"))
    assert len(loras) == 1

    pipe = StableDiffusionPipeline.from_pretrained(folder / "models" / "tiny-sd15")
    def generate():
        return pipe("shp style, red circle", num_inference_steps=2, height=64, width=64,
                    generator=torch.Generator().manual_seed(0), output_type="np").images[0]
    before = generate()
    pipe.load_lora_weights(str(loras[0]))
    assert not (generate() == before).all()

    again = subprocess.run(
        [sys.executable, "-m", "tui_trainer.cli", "buckets", str(folder / "demo-lora.toml")],
        capture_output=True, text=True, timeout=120,
    )
    assert "48x80" in again.stdout and "3 images < batch 4" in again.stdout

"""Tiny real-architecture models and synthetic datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tui_trainer.devkit.datasets import BROKEN_KINDS, make_dataset


def test_tiny_sd15_loads_and_generates_64px(tiny_sd15: Path):
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd15)
    assert list(pipe.unet.config.down_block_types) == ["CrossAttnDownBlock2D", "DownBlock2D"]
    assert len(pipe.vae.config.block_out_channels) == 4
    image = pipe("a dog", num_inference_steps=2, height=64, width=64, generator=torch.Generator().manual_seed(0), output_type="np").images[0]
    assert image.shape == (64, 64, 3)
    assert np.isfinite(image).all() and image.std() > 0.01


@pytest.mark.parametrize("kind", ["sd2", "sdxl", "sd15-inpaint"])
def test_other_tiny_architectures_build(kind: str, tiny_model_dir):
    import json

    folder = tiny_model_dir(kind)
    unet = json.loads((folder / "unet" / "config.json").read_text())
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    expected = {
        "sd2": lambda: scheduler["prediction_type"] == "v_prediction",
        "sdxl": lambda: unet["addition_embed_type"] == "text_time" and (folder / "text_encoder_2").is_dir(),
        "sd15-inpaint": lambda: unet["in_channels"] == 9,
    }
    assert expected[kind]()


def test_make_dataset_sizes_captions_and_broken(tmp_path: Path):
    folder = make_dataset(tmp_path / "ds", [(64, 64, 2), (96, 64, 1)], broken=[k for k in BROKEN_KINDS if k != "unreadable"])
    sizes = sorted(Image.open(p).size for p in folder.glob("img_*.png"))
    assert sizes == [(64, 64), (64, 64), (96, 64)]
    assert len(list(folder.glob("img_*.txt"))) == 3
    assert (folder / "broken_zero_byte.png").stat().st_size == 0
    assert (folder / "broken_broken_symlink.png").is_symlink()

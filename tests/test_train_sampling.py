"""Samples from the live model of every family the trainer samples: files, sizes, untouched RNG streams and modes."""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SAMPLES = (
    '[[samples]]\nprompt = "red, circle"\nsteps = 2\n'
    '[[samples]]\nprompt = "blue, square"\nnegative_prompt = "red"\nwidth = 80\nheight = 64\nsteps = 2\nsampler = "dpmpp_2m"\ncfg = 3.0\n'
)


def tiny_config(model: Path, family: str, resolution: str):
    from tui_trainer.config import parse_config

    return parse_config(
        f'method = "lora"\n{SAMPLES}[model]\nfamily = "{family}"\nbase_model = "{model}"\nunet_dtype = "float32"\n'
        f'text_encoder_dtype = "float32"\ntrain_dtype = "float32"\n[training]\nresolution = "{resolution}"\n'
    )


@pytest.mark.parametrize(("kind", "family"), [("sd15", "sd15"), ("sd2", "sd2"), ("sdxl", "sdxl"), ("sd15-inpaint", "sd15"), ("pixart", "pixart_alpha")])
def test_samples_of_each_family_leave_training_untouched(kind: str, family: str, tiny_model_dir, tmp_path: Path):
    import numpy as np
    import torch
    from PIL import Image

    from tui_trainer.train.loading import load_model
    from tui_trainer.train.sampling import make_samples

    if kind == "pixart":
        from tui_trainer.devkit.tiny_families import save_tiny_family_model

        model_dir = save_tiny_family_model(tmp_path / "pixart", "pixart")
    else:
        model_dir = tiny_model_dir(kind)
    config = tiny_config(model_dir, family, "64")
    model = load_model(config)
    model.unet.train()
    before = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    paths = make_samples(model, config, tmp_path / "samples", 3, torch.device("cpu"), lambda module: module, contextlib.nullcontext)
    assert [path.name for path in paths] == ["step-000003-0.png", "step-000003-1.png"]
    assert [Image.open(path).size for path in paths] == [(64, 64), (80, 64)]
    assert torch.equal(before[0], torch.get_rng_state()) and before[1] == random.getstate()
    assert np.array_equal(before[2], np.random.get_state()[1])
    assert model.unet.training and not model.vae.training


def test_every_sampler_name_builds_from_the_training_scheduler():
    from diffusers import DDPMScheduler

    from tui_trainer.config.enums import SAMPLERS
    from tui_trainer.train.sampling import sampler

    for name in SAMPLERS:
        scheduler = sampler(name, DDPMScheduler(prediction_type="v_prediction"))
        scheduler.set_timesteps(4)
        assert scheduler.config.prediction_type == "v_prediction", name


@pytest.mark.parametrize("decoder", [True, False])
def test_stable_cascade_samples_through_its_decoder_else_warns(decoder: bool, tmp_path: Path):
    import json

    from PIL import Image

    from tui_trainer.cli import main
    from tui_trainer.devkit.datasets import make_dataset
    from tui_trainer.devkit.tiny_families import save_tiny_family_model

    model = save_tiny_family_model(tmp_path / "cascade", "cascade")
    setting = f'cascade_decoder = "{save_tiny_family_model(tmp_path / "decoder", "cascade-decoder")}"\n' if decoder else ""
    config = tmp_path / "config.toml"
    config.write_text(
        f'method = "lora"\n[[samples]]\nprompt = "red, circle"\nwidth = 96\nheight = 128\nsteps = 2\nseed = 5\n'
        f'[model]\nfamily = "stable_cascade"\nbase_model = "{model}"\n{setting}unet_dtype = "float32"\n'
        'text_encoder_dtype = "float32"\ntrain_dtype = "float32"\n'
        f'[workspace]\ndir = "{tmp_path / "ws"}"\nrun_name = "tiny"\noutput_format = "diffusers"\n'
        f'[[concepts]]\nname = "shapes"\npath = "{make_dataset(tmp_path / "data", ((128, 128, 2),))}"\n'
        '[training]\nresolution = "128"\nbatch_size = 2\nmax_steps = 1\ndataloader_workers = 0\ntensorboard = false\n'
        '[sampling]\nbefore_training = true\n[text_encoder]\ntrain = false\n'
    )
    assert main(["train", str(config)]) == 0
    (run,) = (tmp_path / "ws" / "runs").iterdir()
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    warnings = [event["message"] for event in events if event["type"] == "warning" and "sampl" in event["message"]]
    samples = sorted((run / "samples").glob("*.png")) if (run / "samples").is_dir() else []
    if decoder:
        assert [path.name for path in samples] == ["step-000000-0.png"] and not warnings
        assert Image.open(samples[0]).size == (96, 128)
    else:
        assert not samples and len(warnings) == 1 and "model.cascade_decoder" in warnings[0]


def test_a_float32_vae_decodes_a_bfloat16_transformers_latents_without_autocast(tmp_path: Path):
    """FLUX.1 with a bf16 transformer, float32 VAE and float32 compute (no autocast): the VAE gets its own dtype."""
    import torch
    from PIL import Image

    from tui_trainer.config import parse_config
    from tui_trainer.config.enums import Family
    from tui_trainer.devkit.tiny_families import save_tiny_model
    from tui_trainer.train.loading import load_model
    from tui_trainer.train.sampling import make_samples

    model_dir = save_tiny_model(tmp_path / "flux", Family.FLUX1_DEV)
    config = parse_config(
        f'method = "lora"\n[[samples]]\nprompt = "red, circle"\nsteps = 2\n[model]\nfamily = "flux1_dev"\n'
        f'base_model = "{model_dir}"\nvae_dtype = "float32"\ntrain_dtype = "float32"\n[parts.denoiser]\ndtype = "bfloat16"\n'
        '[training]\nresolution = "64"\n[flow]\nmax_sequence_length = 32\n'
    )
    model = load_model(config)
    assert model.unet.dtype == torch.bfloat16 and model.vae.dtype == torch.float32
    (path,) = make_samples(model, config, tmp_path / "samples", 1, torch.device("cpu"), lambda module: module, contextlib.nullcontext)
    assert Image.open(path).size == (64, 64)
    assert "decode" not in vars(model.vae)


def test_a_sample_without_cfg_takes_the_pipelines_own_default():
    """sample.cfg unset: no guidance argument reaches the pipeline, so each family's own default applies (FLUX.1-dev
    3.5, SDXL 5, ...), where a fixed 7 would oversaturate FLUX.1-dev's distilled guidance."""
    import torch
    from PIL import Image

    from tui_trainer.config.schema import SampleConfig
    from tui_trainer.train.sampling import generate, prompt_inputs

    calls = []

    class Pipeline:
        def __call__(self, **kwargs):
            calls.append(kwargs)
            return type("Output", (), {"images": [Image.new("RGB", (64, 64))]})()

    for cfg in (None, 2.5):
        sample = SampleConfig(prompt="red", cfg=cfg)
        generate(Pipeline(), sample, (64, 64), torch.device("cpu"), prompt_inputs(sample, lambda texts: texts))
    assert "guidance_scale" not in calls[0] and calls[1]["guidance_scale"] == 2.5

"""Trainer pieces without a training run: loading refusals, optimizers, schedules, losses, data, caches, formats."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from tui_trainer.config import parse_config
from tui_trainer.config.enums import OptimizerName

BASE = '[model]\nbase_model = "{model}"\n'


def _config(model: str = "org/model", extra: str = ""):
    return parse_config(BASE.format(model=model) + extra)


def test_pickle_checkpoint_is_refused_without_allow_pickle(tmp_path: Path):
    from tui_trainer.train.loading import ModelLoadError, load_model

    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(b"not really a pickle")
    with pytest.raises(ModelLoadError) as error:
        load_model(_config(str(checkpoint)))
    assert str(error.value) == (
        f"{checkpoint}: pickle checkpoints (.ckpt/.pt/.pth/.bin) can run code when loaded; convert it to .safetensors, "
        "or set model.allow_pickle = true if you trust the file"
    )


def test_hub_id_without_network_says_how_to_use_a_local_copy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from tui_trainer.train.loading import ModelLoadError, load_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelLoadError) as error:
        load_model(_config("nobody/no-such-model"))
    message = str(error.value)
    assert "'nobody/no-such-model'" in message and "hf download nobody/no-such-model" in message
    assert "model.base_model" in message and "HF_HUB_OFFLINE=1" in message


def test_missing_local_model_is_named(tmp_path: Path):
    from tui_trainer.train.loading import ModelLoadError, load_model

    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(_config(str(tmp_path / "nope.safetensors")))


@pytest.mark.parametrize("name", list(OptimizerName))
def test_every_optimizer_builds_from_its_settings_and_steps(name: OptimizerName):
    import torch

    from tui_trainer.train.optim import build_optimizer

    config = _config(extra=f'[optimizer]\nname = "{name.value}"\nlearning_rate = 0.01\n')
    start = torch.full((64, 64), 1e-4)
    weight = torch.nn.Parameter(start.clone())
    optimizer = build_optimizer(config, [{"params": [weight], "lr": 0.01, "name": "unet"}])
    if hasattr(optimizer, "train"):
        optimizer.train()
    (weight**2).sum().backward()
    optimizer.step()
    assert not torch.equal(weight.detach(), start)  # prodigy's first step is tiny (d0 = 1e-6)
    assert optimizer.param_groups[0]["name"] == "unet"


def test_optimizer_settings_reach_the_optimizer():
    import torch

    from tui_trainer.train.optim import build_optimizer

    config = _config(extra='[optimizer]\nname = "adamw"\n[optimizer.settings.adamw]\nbeta1 = 0.8\nweight_decay = 0.2\n')
    optimizer = build_optimizer(config, [{"params": [torch.nn.Parameter(torch.ones(2))], "lr": 0.1, "name": "unet"}])
    assert optimizer.param_groups[0]["betas"] == (0.8, 0.999) and optimizer.param_groups[0]["weight_decay"] == 0.2
    assert optimizer.param_groups[0]["fused"] is True  # one kernel; torch's CPU default loops over the parameters


def test_missing_optional_package_names_the_pip_extra(monkeypatch: pytest.MonkeyPatch):
    import sys

    from tui_trainer.train.optim import OptimizerUnavailable, optimizer_class

    monkeypatch.setitem(sys.modules, "prodigyopt", None)
    with pytest.raises(OptimizerUnavailable, match=r"pip install 'tui-trainer\[optim\]'"):
        optimizer_class(OptimizerName.PRODIGY)


def test_schedule_warmup_fraction_and_lr_floor():
    import torch

    from tui_trainer.train.optim import build_lr_scheduler, warmup_steps

    assert warmup_steps(0.1, 50) == 5 and warmup_steps(3, 50) == 3
    config = _config(extra='[scheduler]\nname = "cosine"\nwarmup = 0.2\nmin_lr_factor = 0.1\n')
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=1.0)
    scheduler = build_lr_scheduler(config, optimizer, 10)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == 0 and lrs[1] == pytest.approx(0.5) and lrs[2] == pytest.approx(1.0)
    assert min(lrs[2:]) >= 0.1 - 1e-9 and lrs[-1] < 0.2


def test_targets_by_prediction_type_and_min_snr():
    import torch
    from diffusers import DDPMScheduler

    from tui_trainer.train.loop import SNR_WEIGHTS, TARGETS, diffusion_loss

    scheduler = DDPMScheduler(prediction_type="v_prediction")
    latents, noise, timesteps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.tensor([10, 900])
    alpha = scheduler.alphas_cumprod[timesteps].sqrt().view(-1, 1, 1, 1)
    sigma = (1 - scheduler.alphas_cumprod[timesteps]).sqrt().view(-1, 1, 1, 1)
    assert torch.allclose(TARGETS["v_prediction"](scheduler, latents, noise, timesteps), alpha * noise - sigma * latents, atol=1e-6)
    assert TARGETS["epsilon"](scheduler, latents, noise, timesteps) is noise
    snr = torch.tensor([0.5, 10.0])
    assert torch.allclose(SNR_WEIGHTS["epsilon"](snr, 5.0), torch.tensor([1.0, 0.5]))
    training = _config(extra="[training]\nmin_snr_gamma = 5.0\n").training
    prediction = torch.zeros_like(latents)
    plain = diffusion_loss(prediction, noise, timesteps, scheduler, "epsilon", _config().training)
    weighted = diffusion_loss(prediction, noise, timesteps, scheduler, "epsilon", training)
    assert weighted < plain
    huber = _config(extra='[training]\nloss = "huber"\nhuber_delta = 0.1\n').training
    assert diffusion_loss(prediction, noise, timesteps, scheduler, "epsilon", huber) < plain


def test_offset_noise_and_noise_come_from_the_generator():
    import torch
    from diffusers import DDPMScheduler

    from tui_trainer.train.loop import add_noise

    training = _config(extra="[training]\noffset_noise = 0.1\n").training
    latents = torch.zeros(2, 4, 8, 8)
    draws = [add_noise(DDPMScheduler(), latents, training, torch.Generator().manual_seed(3)) for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(*draws, strict=True))


def test_placed_encoder_casts_pixels_once_and_never_asks_the_vae_its_device_or_dtype(monkeypatch: pytest.MonkeyPatch):
    import torch
    from diffusers import AutoencoderKL

    from tui_trainer.devkit.tiny_models import build_tiny_pipeline
    from tui_trainer.train.loop import encode_latents, placed_encoder

    vae = build_tiny_pipeline("sd15").vae.to(torch.bfloat16)
    pixels = torch.rand(1, 3, 64, 64) * 2 - 1
    expected = encode_latents(vae, pixels.to(torch.bfloat16))
    encode = placed_encoder(encode_latents, vae)

    def walks(self):
        raise AssertionError("a step looked up the VAE's device or dtype (a walk over every submodule)")

    monkeypatch.setattr(AutoencoderKL, "device", property(walks))
    monkeypatch.setattr(AutoencoderKL, "dtype", property(walks))
    latents = encode(pixels)
    assert latents.dtype == torch.float32 and latents.shape == (1, 4, 8, 8)
    assert torch.equal(latents, expected)


def _item(path: Path, size: tuple[int, int], bucket: tuple[int, int]) -> SimpleNamespace:
    return SimpleNamespace(path=path, width=size[0], height=size[1], bucket=bucket, caption_path=None, caption_choices=(),
                           concept_index=0, mask_path=None)


def test_image_is_upright_rgb_on_white_and_cropped_to_its_bucket(tmp_path: Path):
    from PIL import Image

    from tui_trainer.devkit.datasets import make_exif_rotated
    from tui_trainer.train.dataset import Augment, choose_crop, open_rgb, transform

    rotated = open_rgb(make_exif_rotated(tmp_path / "r.jpg", 80, 48))
    assert rotated.size == (48, 80) and rotated.mode == "RGB"
    transparent = tmp_path / "t.png"
    Image.new("RGBA", (16, 16), (0, 0, 0, 0)).save(transparent)
    assert open_rgb(transparent).getpixel((3, 3)) == (255, 255, 255)
    rng = random.Random(0)
    assert choose_crop((100, 50), (64, 64), 0.0, rng) == (32, 0)
    jittered = {choose_crop((100, 50), (64, 64), 1.0, rng) for _ in range(50)}
    assert all(0 <= left <= 64 and top == 0 for left, top in jittered) and len(jittered) > 5
    gradient = Image.linear_gradient("L").convert("RGB").resize((128, 64))
    flipped = transform(gradient, (64, 64), Augment(32, 0, True))
    assert flipped.size == (64, 64) and flipped.getpixel((0, 0)) == transform(gradient, (64, 64), Augment(32, 0, False)).getpixel((63, 0))


def test_caption_keep_tokens_shuffle_and_dropouts():
    from tui_trainer.config.schema import ConceptConfig
    from tui_trainer.train.dataset import process_caption

    choices = ("sks, a, b, c, d, e",)
    shuffled = ConceptConfig(name="c", path=".", keep_tokens=1, shuffle_tags=True)
    results = {process_caption(choices, shuffled, random.Random(seed)) for seed in range(20)}
    assert len(results) > 1 and all(r.startswith("sks, ") and sorted(r.split(", ")) == ["a", "b", "c", "d", "e", "sks"] for r in results)
    assert process_caption(choices, shuffled, random.Random(4)) == process_caption(choices, shuffled, random.Random(4))
    assert process_caption(choices, ConceptConfig(name="c", path=".", caption_dropout=1.0), random.Random(0)) == ""
    dropped = process_caption(choices, ConceptConfig(name="c", path=".", keep_tokens=2, tag_dropout=1.0), random.Random(0))
    assert dropped == "sks, a"
    assert process_caption(choices, ConceptConfig(name="c", path="."), random.Random(0)) == "sks, a, b, c, d, e"


def test_image_that_fails_at_load_time_is_skipped_and_reported(tmp_path: Path):
    from tui_trainer.config.schema import ConceptConfig
    from tui_trainer.data import read_captions
    from tui_trainer.devkit.datasets import make_dataset
    from tui_trainer.train.dataset import EpochBatches

    make_dataset(tmp_path, ((64, 64, 1),), broken=("truncated",))
    good, bad = tmp_path / "img_0000_64x64.png", tmp_path / "broken_truncated.png"
    batches = [[_item(good, (64, 64), (64, 64)), _item(bad, (64, 64), (64, 64))]]
    concepts = [ConceptConfig(name="c", path=".")]
    batch = EpochBatches(batches, 0, 1, concepts, read_captions(batches[0], concepts))[0]
    assert batch.pixels.shape == (1, 3, 64, 64) and batch.paths == [str(good)]
    assert [path for path, _ in batch.skipped] == [str(bad)]


def test_trainer_reads_captions_at_start_and_warns_once_about_one_not_utf8(tmp_path: Path):
    """Through the trainer's own setup: a caption edited after a warm scan is what the batch carries, and a caption
    file that is not UTF-8 is one warning event naming it."""
    import json
    import os
    import time

    from tui_trainer.config import config_from_dict
    from tui_trainer.data import build_report
    from tui_trainer.devkit.datasets import make_dataset
    from tui_trainer.runs.layout import create_run_dir
    from tui_trainer.train.dataset import EpochBatches
    from tui_trainer.train.entry import TrainRecipe
    from tui_trainer.train.monitor import RunMonitor

    folder = make_dataset(tmp_path / "ds", ((64, 64, 3),))
    when = time.time() - 60
    for path in [folder, *folder.iterdir()]:
        os.utime(path, (when, when))
    config = config_from_dict({
        "model": {"base_model": "x"}, "workspace": {"dir": str(tmp_path / "ws")},
        "training": {"resolution": "64", "batch_size": 3},
        "concepts": [{"name": "c", "path": str(folder), "caption_prefix": "sks, "}],
    })
    build_report(config, None)
    (folder / "img_0001_64x64.txt").write_text("edited   after\nthe scan")
    (folder / "img_0002_64x64.txt").write_bytes(b"caf\xe9")
    run = create_run_dir(tmp_path / "ws", "t", "")
    monitor = RunMonitor(run)
    try:
        recipe = TrainRecipe(config, None, run, monitor)
        report = recipe._setup_data()
    finally:
        monitor.close()
    loaded = EpochBatches([report.items], 0, 0, config.concepts, recipe.item_captions)[0]
    by_path = dict(zip(loaded.paths, loaded.captions, strict=True))
    assert by_path[str(folder / "img_0001_64x64.png")] == "sks, edited after the scan"
    assert by_path[str(folder / "img_0002_64x64.png")] == "sks, caf\ufffd"
    events = [json.loads(line) for line in run.events_file.read_text().splitlines()]
    warnings = [event for event in events if event["type"] == "warning" and "UTF-8" in event["message"]]
    bad = str(folder / "img_0002_64x64.txt")
    assert [(event["message"], event["paths"]) for event in warnings] == [
        (f"concept 'c' (concepts[0]): 1 caption files are not UTF-8 ({bad!r}); bad bytes were replaced", [bad])
    ]


def test_latent_cache_key_follows_content_bucket_crop_flip_and_vae(tmp_path: Path):
    import shutil

    from tui_trainer.train.caching import LatentCache
    from tui_trainer.train.dataset import Augment

    image = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (8, 8), (1, 2, 3)).save(image)
    shutil.copy(image, tmp_path / "renamed.png")
    cache = LatentCache(tmp_path / "cache", "vae-1")
    base = cache.key(_item(image, (8, 8), (8, 8)), Augment(0, 0, False))
    assert cache.key(_item(tmp_path / "renamed.png", (8, 8), (8, 8)), Augment(0, 0, False)) == base
    assert base != cache.key(_item(image, (8, 8), (8, 16)), Augment(0, 0, False))
    assert base != cache.key(_item(image, (8, 8), (8, 8)), Augment(1, 0, False))
    assert base != cache.key(_item(image, (8, 8), (8, 8)), Augment(0, 0, True))
    assert base != LatentCache(tmp_path / "cache", "vae-2").key(_item(image, (8, 8), (8, 8)), Augment(0, 0, False))


def test_kohya_keys_for_two_text_encoders_and_alpha():
    import torch

    from tui_trainer.config.enums import Family
    from tui_trainer.config.schema import LoraConfig
    from tui_trainer.train.families import train_family
    from tui_trainer.train.saving import kohya_state_dict

    pair = {"lora_A.weight": torch.ones(4, 8), "lora_B.weight": torch.ones(8, 4)}
    state_dicts = {
        "unet": {f"mid_block.attentions.0.to_q.{k}": v for k, v in pair.items()},
        "text_encoder": {f"encoder.layers.0.self_attn.q_proj.{k}": v for k, v in pair.items()},
        "text_encoder_2": {f"encoder.layers.0.self_attn.q_proj.{k}": v for k, v in pair.items()},
    }
    converted = kohya_state_dict(state_dicts, LoraConfig(rank=4, alpha=1.0), train_family(Family.SDXL).saving.kohya_prefixes)
    assert set(converted) == {
        f"{prefix}.{name}"
        for prefix in ("lora_unet_mid_block_attentions_0_to_q", "lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
                       "lora_te2_text_model_encoder_layers_0_self_attn_q_proj")
        for name in ("lora_down.weight", "lora_up.weight", "alpha")
    }
    assert float(converted["lora_unet_mid_block_attentions_0_to_q.alpha"]) == 1.0
    sd15 = train_family(Family.SD15).saving.kohya_prefixes
    loha = kohya_state_dict({"unet": {"mid_block.attentions.0.to_q.hada_w1_a": torch.ones(2)}}, LoraConfig(type="loha", alpha=3.0), sd15)
    assert set(loha) == {"lora_unet_mid_block_attentions_0_to_q.hada_w1_a", "lora_unet_mid_block_attentions_0_to_q.alpha"}
    assert float(loha["lora_unet_mid_block_attentions_0_to_q.alpha"]) == 3.0


def test_out_of_memory_hint_comes_from_the_vram_estimator():
    from tui_trainer.estimate import estimate
    from tui_trainer.train.entry import oom_hint

    config = _config(extra='[[concepts]]\nname = "a"\npath = "."\n')
    best = max(estimate(config).suggestions, key=lambda suggestion: suggestion.saves_bytes)
    assert oom_hint(config).startswith(f"{best.change} (saves ")


def test_pickle_refusal_ends_the_run_with_an_error_event(tmp_path: Path):
    import json

    from tui_trainer.devkit.datasets import make_dataset
    from tui_trainer.train.entry import train_file
    from tui_trainer.train.loading import pickle_refusal

    from train_support import write_config

    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(b"not really a pickle")
    config = write_config(tmp_path, checkpoint, make_dataset(tmp_path / "data", ((64, 64, 2),)))
    code, run = train_file(config, console=None)
    events = [json.loads(line) for line in run.events_file.read_text().splitlines()]
    (error,) = [event for event in events if event["type"] == "error"]
    assert code == 1 and error["message"] == pickle_refusal(checkpoint)
    assert events[-1]["type"] == "end" and events[-1]["reason"] == "error"
    assert json.loads(run.status_file.read_text())["state"] == "failed"


@pytest.mark.parametrize(("preset", "refused"), [("sd15-finetune", False), ("pixart-alpha-finetune", True), ("cascade-finetune", True)])
def test_single_file_finetune_needs_an_original_layout(preset: str, refused: bool):
    from tui_trainer.config import load_preset
    from tui_trainer.config.enums import OutputFormat
    from tui_trainer.train.methods import finetune

    config = load_preset(preset)
    config.workspace.output_format = OutputFormat.SINGLE_FILE
    expected = [f"workspace.output_format 'single_file' has no original layout for {config.model.family.value}; use 'diffusers'"]
    assert finetune.check(config) == (expected if refused else [])


def test_a_family_without_sampling_warns_once_not_at_every_cadence():
    from tui_trainer.config import load_preset
    from tui_trainer.config.schema import SampleConfig
    from tui_trainer.train.entry import TrainRecipe

    recipe = TrainRecipe.__new__(TrainRecipe)
    recipe.config = load_preset("cascade-lora")
    recipe.config.samples = [SampleConfig(prompt="a cat")]
    warnings: list[str] = []
    recipe.monitor = SimpleNamespace(warning=warnings.append)
    recipe.warned_sampling = set()
    recipe.sample()
    recipe.sample()
    assert len(warnings) == 1 and warnings[0].startswith("no samples: stage C makes image embeddings")


def test_quantize_nf4_replaces_linear_layers():
    """The trainer's nf4 swap (also the GPU check's): every Linear becomes a 4-bit layer that still computes about the same."""
    import bitsandbytes
    import torch

    from tui_trainer.train.loading import quantize_nf4

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 64)).to(torch.bfloat16)
    x = torch.randn(4, 64, dtype=torch.bfloat16)
    expected = model(x)
    quantize_nf4(model, torch.bfloat16)
    assert all(isinstance(model[i], bitsandbytes.nn.Linear4bit) for i in (0, 2))
    assert model[0].weight.quant_type == "nf4" and model[0].weight.dtype == torch.uint8
    error = (model(x) - expected).abs().mean() / expected.abs().mean()
    assert error < 0.2

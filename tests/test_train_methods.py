"""Every family x method pair the presets offer, trained a few steps on the tiny models, loaded back with
diffusers' own loaders; single-file round trips; v-prediction targets; SDXL time ids; masked training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from train_support import finish, train_in_process

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

PROMPT = "red, circle"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 images in two buckets, each with a -masklabel.png."""
    from tui_trainer.devkit.datasets import make_dataset

    return make_dataset(tmp_path_factory.mktemp("data"), ((64, 64, 3), (72, 56, 1)), masks=True)


def _merge(base: dict, changes: dict) -> dict:
    for key, value in changes.items():
        base[key] = _merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return base


def preset_config(folder: Path, preset: str, model: Path, data: Path, **changes: Any) -> Path:
    """A preset with base_model = the tiny model, float32, 64 px, 2 steps of batch 2, no samples/backups."""
    from tui_trainer.config import load_preset
    from tui_trainer.config.io import config_from_dict, config_to_dict, save_config

    document = config_to_dict(load_preset(preset))
    _merge(document, {
        "model": {"base_model": str(model), "train_dtype": "float32"},
        "parts": {table: {"dtype": "float32"} for table in ("denoiser", "text_encoder", "text_encoder_2")},
        "workspace": {"dir": str(folder / "ws"), "run_name": "tiny"},
        "training": {"resolution": "64", "batch_size": 2, "gradient_accumulation": 1, "max_steps": 2, "seed": 3,
                     "dataloader_workers": 0, "tensorboard": False},
        "sampling": {"every": 0}, "backup": {"every": 0},
        "concepts": [{"name": "shapes", "path": str(data)}],
    })
    _merge(document, changes)
    path = folder / f"{preset}.toml"
    save_config(config_from_dict(document), path)
    return path


def train(config_path: Path):
    """Set up, train and save in this process; returns the recipe (its model is the trained one)."""
    recipe = train_in_process(config_path)
    try:
        recipe.saved = recipe.save()
    finally:
        finish(recipe)
    return recipe


def generate(pipeline, prompt: str = PROMPT, **kwargs: Any) -> np.ndarray:
    """A 64 px image from a fixed seed."""
    generator = torch.Generator().manual_seed(0)
    return pipeline(prompt, num_inference_steps=2, generator=generator, output_type="np", height=64, width=64, **kwargs).images[0]


def load_pipeline(kind: str, folder: Path):
    import diffusers

    extras = {} if kind == "sdxl" else {"safety_checker": None, "requires_safety_checker": False}
    return diffusers.DiffusionPipeline.from_pretrained(folder, **extras)


def differs(a: np.ndarray, b: np.ndarray) -> bool:
    return float(np.abs(a - b).max()) > 1e-3


def assert_modules_equal(expected: torch.nn.Module, actual: torch.nn.Module) -> None:
    """Same keys and bit-identical tensors."""
    a, b = expected.state_dict(), actual.state_dict()
    assert a.keys() == b.keys()
    assert [key for key in a if not torch.equal(a[key].cpu(), b[key].cpu())] == []


@pytest.mark.parametrize(("preset", "kind"), [("sd15-lora", "sd15"), ("sd21-lora", "sd2"), ("sdxl-lora", "sdxl")])
def test_lora_presets_load_with_load_lora_weights(preset, kind, tiny_model_dir, dataset, tmp_path):
    from peft.tuners.tuners_utils import BaseTunerLayer

    model = tiny_model_dir(kind)
    recipe = train(preset_config(tmp_path, preset, model, dataset, parts={"text_encoder": {"train": True}, "text_encoder_2": {"train": True}},
                                 training={"masked_training": True, "unmasked_probability": 0.0}))
    (saved,) = recipe.saved
    pipeline = load_pipeline(kind, model)
    base = generate(pipeline)
    pipeline.load_lora_weights(str(saved.path))
    encoders = [name for name in ("text_encoder", "text_encoder_2") if getattr(pipeline, name, None) is not None]
    adapted = {name: any(isinstance(m, BaseTunerLayer) for m in getattr(pipeline, name).modules()) for name in ["unet", *encoders]}
    assert adapted == dict.fromkeys(["unet", *encoders], True)
    assert differs(generate(pipeline), base)
    if kind == "sd2":
        assert recipe.model.prediction_type == "v_prediction"
    if kind == "sdxl":
        from safetensors import safe_open

        with safe_open(saved.path, "pt") as handle:
            prefixes = {key.split("_", 2)[1] for key in handle.keys()}
        assert prefixes == {"unet", "te1", "te2"}


@pytest.mark.parametrize(("preset", "kind"), [("sd15-embedding", "sd15"), ("sdxl-embedding", "sdxl")])
def test_embedding_presets_load_with_load_textual_inversion(preset, kind, tiny_model_dir, dataset, tmp_path):
    from safetensors.torch import load_file

    from tui_trainer.models.families import family_spec

    model = tiny_model_dir(kind)
    recipe = train(preset_config(tmp_path, preset, model, dataset, embedding={"num_vectors": 2, "init_text": "dog"}))
    keys = family_spec(recipe.config.model.family).embedding_keys
    tensors = load_file(recipe.saved[0].path)
    assert set(tensors) == set(keys.values())

    base_pipeline = load_pipeline(kind, model)
    for name, key in keys.items():
        base_encoder, trained = getattr(base_pipeline, name), recipe.model.text_encoders[name]
        assert tensors[key].shape == (2, base_encoder.config.hidden_size)
        _assert_only_new_rows_changed(base_encoder, trained, tensors[key])

    prompt = "<sks>, red, circle"
    base = generate(base_pipeline, prompt)
    pipeline = load_pipeline(kind, model)
    tokenizers = {"text_encoder": "tokenizer", "text_encoder_2": "tokenizer_2"}
    for name, key in keys.items():
        pipeline.load_textual_inversion(tensors[key], token="<sks>", text_encoder=getattr(pipeline, name), tokenizer=getattr(pipeline, tokenizers[name]))
    assert differs(generate(pipeline, prompt), base)


def _assert_only_new_rows_changed(base: torch.nn.Module, trained: torch.nn.Module, vectors: torch.Tensor) -> None:
    """Every weight of the trained text encoder but the new token rows is bit-identical to the base model's."""
    original = base.state_dict()
    trained_state = {key.replace(".base_layer", ""): value for key, value in trained.state_dict().items() if "trainable_tokens" not in key}
    assert trained_state.keys() == original.keys()
    for key, value in original.items():
        got = trained_state[key][: len(value)] if "token_embedding" in key else trained_state[key]
        assert torch.equal(got, value), key
    embedding = next(value for key, value in trained_state.items() if "token_embedding" in key)
    initial = embedding[len(original[next(key for key in original if "token_embedding" in key)]):]
    assert initial.shape == vectors.shape and not torch.equal(initial, vectors)  # initial rows stay; trained ones moved


def test_sd15_finetune_preset_writes_a_diffusers_pipeline(tiny_model_dir, dataset, tmp_path):
    model = tiny_model_dir("sd15")
    recipe = train(preset_config(tmp_path, "sd15-finetune", model, dataset, training={"ema": True, "ema_decay": 0.5},
                                  optimizer={"learning_rate": 0.001}))
    (saved,) = recipe.saved
    assert saved.format == "diffusers" and (saved.path / "model_index.json").is_file()
    assert not list(saved.path.rglob("*.bin")) and list(saved.path.rglob("*.safetensors"))
    loaded = load_pipeline("sd15", saved.path)
    averaged = torch.nn.utils.parameters_to_vector(loaded.unet.parameters())
    ema = torch.nn.utils.parameters_to_vector(recipe.ema.model.shadow_params)
    trained = torch.nn.utils.parameters_to_vector(recipe.model.unet.parameters())
    assert torch.equal(averaged, ema) and not torch.equal(averaged, trained)  # the file holds the EMA weights
    assert differs(generate(loaded), generate(load_pipeline("sd15", model)))


def test_sdxl_finetune_preset_single_file_loads_back_with_equal_weights(tiny_model_dir, dataset, tmp_path):
    from diffusers import StableDiffusionXLPipeline
    from safetensors import safe_open

    model = tiny_model_dir("sdxl")
    recipe = train(preset_config(tmp_path, "sdxl-finetune", model, dataset, optimizer={"learning_rate": 0.001}))
    (saved,) = recipe.saved
    with safe_open(saved.path, "pt") as handle:
        assert "stable-diffusion-xl" in handle.metadata()["modelspec.architecture"]
    loaded = StableDiffusionXLPipeline.from_single_file(str(saved.path), config=str(model))
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        assert_modules_equal(recipe.model.part(name), getattr(loaded, name))
    assert differs(generate(loaded), generate(load_pipeline("sdxl", model)))


@pytest.mark.parametrize("output_format", ["kohya", "single_file"])
def test_sd15_inpaint_preset_as_lora_and_as_finetune(output_format, tiny_model_dir, dataset, tmp_path):
    from diffusers import StableDiffusionInpaintPipeline
    from PIL import Image

    model = tiny_model_dir("sd15-inpaint")
    changes = {"workspace": {"output_format": output_format}, "inpaint": {"random_mask_kind": "strokes"}}
    recipe = train(preset_config(tmp_path, "sd15-inpaint", model, dataset, **changes))
    (saved,) = recipe.saved
    image = Image.open(next(dataset.glob("img_0000_*.png")).with_suffix(".png")).convert("RGB")
    mask = Image.open(next(dataset.glob("*-masklabel.png")))
    inputs = {"image": image, "mask_image": mask}
    base_pipeline = StableDiffusionInpaintPipeline.from_pretrained(model, safety_checker=None, requires_safety_checker=False)
    base = generate(base_pipeline, **inputs)
    if output_format == "kohya":
        base_pipeline.load_lora_weights(str(saved.path))
        pipeline = base_pipeline
    else:
        pipeline = StableDiffusionInpaintPipeline.from_single_file(str(saved.path), config=str(model), safety_checker=None, requires_safety_checker=False)
        assert_modules_equal(recipe.model.unet, pipeline.unet)
    assert differs(generate(pipeline, **inputs), base)


@pytest.mark.parametrize("kind", ["sd15", "sd2", "sdxl", "sd15-inpaint"])
def test_single_file_round_trip_key_by_key(kind, tiny_model_dir, tmp_path):
    """Our diffusers -> original key mapping, read back by diffusers' from_single_file: every tensor equal."""
    from safetensors.torch import save_file

    from tui_trainer.config.enums import Family
    from tui_trainer.train.original_layout import single_file_state_dict

    family = {"sd15": Family.SD15, "sd2": Family.SD2, "sdxl": Family.SDXL, "sd15-inpaint": Family.SD15}[kind]
    pipeline = load_pipeline(kind, tiny_model_dir(kind))
    parts = {name: getattr(pipeline, name) for name in ("unet", "vae", "text_encoder", "text_encoder_2") if getattr(pipeline, name, None) is not None}
    path = tmp_path / "model.safetensors"
    save_file(single_file_state_dict(family, parts), path)
    extras = {} if kind == "sdxl" else {"safety_checker": None, "requires_safety_checker": False}
    loaded = type(pipeline).from_single_file(str(path), config=str(tiny_model_dir(kind)), **extras)
    for name, module in parts.items():
        assert_modules_equal(module, getattr(loaded, name))


def test_conversion_refuses_a_unet_it_cannot_map():
    from diffusers import UNet2DConditionModel

    from tui_trainer.devkit.tiny_models import SD_UNET
    from tui_trainer.train.original_layout import ConversionError, convert_part

    unet = UNet2DConditionModel(**{**SD_UNET, "layers_per_block": 1, "addition_embed_type": "text", "encoder_hid_dim": 16})
    with pytest.raises(ConversionError):
        convert_part(unet, "ldm_unet", "model.diffusion_model.")

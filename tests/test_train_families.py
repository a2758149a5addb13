"""PixArt-alpha and Stable Cascade stage C: tiny models train (LoRA, finetune) through `tui-trainer train`, and
what they write loads back into fresh models with peft / diffusers and changes their predictions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

FAMILIES = {
    "pixart": ("pixart_alpha", "transformer", "PixArtTransformer2DModel", "64", 64),
    "cascade": ("stable_cascade", "prior", "StableCascadeUNet", "128", 128),
}
"""Tiny kind -> (config family, component, diffusers class, training resolution, image side)."""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """Factory: (tiny model folder, dataset folder) of a kind, built once."""
    from tui_trainer.devkit.datasets import make_dataset
    from tui_trainer.devkit.tiny_families import save_tiny_family_model

    root = tmp_path_factory.mktemp("tiny-families")
    built: dict[str, tuple[Path, Path]] = {}

    def get(kind: str) -> tuple[Path, Path]:
        if kind not in built:
            side = FAMILIES[kind][4]
            model = save_tiny_family_model(root / kind, kind)
            built[kind] = model, make_dataset(root / f"{kind}-data", ((side, side, 4),))
        return built[kind]

    return get


def _train(folder: Path, kind: str, method: str, tiny) -> Path:
    """Train 3 steps; returns the output path from the `save` event."""
    from tui_trainer.cli import main

    family, *_ = FAMILIES[kind]
    model, data = tiny(kind)
    config = folder / "config.toml"
    config.write_text(
        f'method = "{method}"\n[model]\nfamily = "{family}"\nbase_model = "{model}"\nunet_dtype = "float32"\n'
        'text_encoder_dtype = "float32"\ntrain_dtype = "float32"\n'
        f'[workspace]\ndir = "{folder / "ws"}"\nrun_name = "tiny"\noutput_format = "diffusers"\n'
        f'[[concepts]]\nname = "shapes"\npath = "{data}"\n'
        f'[training]\nresolution = "{FAMILIES[kind][3]}"\nbatch_size = 2\nepochs = 2\nmax_steps = 3\n'
        'gradient_checkpointing = false\ndataloader_workers = 0\ntensorboard = false\nseed = 3\n'
        'cache_text_encoder_outputs = true\nvariance_loss = true\n'
        '[optimizer]\nlearning_rate = 0.002\n[text_encoder]\ntrain = false\n[lora]\nrank = 4\nalpha = 4.0\n'
    )
    assert main(["train", str(config)]) == 0
    (run,) = (folder / "ws" / "runs").iterdir()
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    steps = [event for event in events if event["type"] == "step"]
    assert len(steps) == 3 and all(event["loss"] > 0 for event in steps)
    (saved,) = [event for event in events if event["type"] == "save"]
    return Path(saved["path"])


def _inputs(kind: str):
    """A fixed denoiser input of the tiny model of `kind` (keyword arguments)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    if kind == "pixart":
        return {
            "hidden_states": torch.randn(1, 4, 8, 8, generator=generator), "timestep": torch.tensor([500]),
            "encoder_hidden_states": torch.randn(1, 6, 32, generator=generator),
            "added_cond_kwargs": {"resolution": torch.tensor([[64.0, 64.0]]), "aspect_ratio": torch.tensor([[1.0]])},
        }
    return {
        "sample": torch.randn(1, 16, 3, 3, generator=generator), "timestep_ratio": torch.tensor([0.5]),
        "clip_text_pooled": torch.randn(1, 1, 32, generator=generator), "clip_text": torch.randn(1, 77, 32, generator=generator),
        "clip_img": torch.zeros(1, 1, 768),
    }


def _predict(module, kind: str):
    import torch

    with torch.no_grad():
        return module.eval()(**_inputs(kind), return_dict=False)[0]


def _fresh(kind: str, tiny):
    import diffusers

    _, component, class_name, *_ = FAMILIES[kind]
    return getattr(diffusers, class_name).from_pretrained(tiny(kind)[0], subfolder=component)


@pytest.mark.parametrize("kind", list(FAMILIES))
def test_lora_loads_into_a_fresh_denoiser_with_peft(kind: str, tiny, tmp_path: Path) -> None:
    import peft
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    output = _train(tmp_path, kind, "lora", tiny)
    file = output / "pytorch_lora_weights.safetensors"
    component = FAMILIES[kind][1]
    tensors = load_file(file)
    assert tensors and all(key.startswith(f"{component}.") for key in tensors)
    with safe_open(str(file), "pt") as handle:
        adapter = json.loads(handle.metadata()["lora_adapter_metadata"])
    settings = {key.removeprefix(f"{component}."): value for key, value in adapter.items()}
    denoiser = _fresh(kind, tiny)
    before = _predict(denoiser, kind)
    peft.inject_adapter_in_model(peft.LoraConfig(**{k: settings[k] for k in ("r", "lora_alpha", "target_modules")}), denoiser)
    result = peft.set_peft_model_state_dict(denoiser, {key.removeprefix(f"{component}."): value for key, value in tensors.items()})
    adapter_keys = [name for name, _ in denoiser.named_parameters() if "lora_" in name]
    assert not result.unexpected_keys and not [key for key in result.missing_keys if "lora_" in key]
    assert len(adapter_keys) == len(tensors)
    assert (_predict(denoiser, kind) - before).abs().max() > 1e-5
    assert torch.isfinite(_predict(denoiser, kind)).all()


@pytest.mark.parametrize("kind", list(FAMILIES))
def test_finetune_writes_a_pipeline_folder_that_predicts_differently(kind: str, tiny, tmp_path: Path) -> None:
    import diffusers

    output = _train(tmp_path, kind, "finetune", tiny)
    _, component, class_name, *_ = FAMILIES[kind]
    assert (output / "model_index.json").is_file()
    trained = getattr(diffusers, class_name).from_pretrained(output, subfolder=component)
    assert (_predict(trained, kind) - _predict(_fresh(kind, tiny), kind)).abs().max() > 1e-5
    pipeline = diffusers.DiffusionPipeline.from_pretrained(output)
    assert type(pipeline).__name__ == {"pixart": "PixArtAlphaPipeline", "cascade": "StableCascadePriorPipeline"}[kind]


def test_cascade_caption_reaches_the_prior(tiny) -> None:
    """Stage C's loss on fixed latents and noise changes with the caption (clip_text and pooled both arrive)."""
    import contextlib

    import torch

    from tui_trainer.config.schema import TrainingConfig
    from tui_trainer.train.families.stable_cascade import cascade_loss, clip_cascade_conditioning
    from tui_trainer.train.loading import load_model
    from tui_trainer.config import parse_config

    model_dir, _ = tiny("cascade")
    config = parse_config(f'[model]\nfamily = "stable_cascade"\nbase_model = "{model_dir}"\nunet_dtype = "float32"\n'
                          'text_encoder_dtype = "float32"\ntrain_dtype = "float32"\n[[concepts]]\nname = "x"\npath = "."\n', "t.toml")
    model = load_model(config)
    latents = torch.randn(1, 16, 3, 3, generator=torch.Generator().manual_seed(1))

    def loss(caption: str) -> float:
        conditioning = clip_cascade_conditioning(model, [caption], torch.device("cpu"))
        with torch.no_grad():
            return float(cascade_loss(model, latents, conditioning, TrainingConfig(), torch.Generator().manual_seed(2),
                                      torch.float32, contextlib.nullcontext))

    assert loss("red circle") == loss("red circle")
    assert loss("red circle") != loss("a blue square")

"""Helpers of the trainer tests: a tiny LoRA config on a synthetic 64 px dataset."""

from __future__ import annotations

from pathlib import Path


def write_config(folder: Path, model: Path, data: Path, *, extra: str = "", workspace: Path | None = None, **tables: str) -> Path:
    """A tiny LoRA config (UNet + text encoder, 64 px, batch 2, 10 steps, float32, no checkpointing)."""
    sections = {
        "training": 'resolution = "64"\nbatch_size = 2\nepochs = 3\nmax_steps = 10\ngradient_checkpointing = false\n'
                    "dataloader_workers = 0\ntensorboard = false\nseed = 7",
        "optimizer": "learning_rate = 0.001",
        "text_encoder": "train = true",
        "lora": "rank = 4\nalpha = 2.0",
    }
    sections.update(tables)
    body = "\n".join(f"[{name}]\n{text}" for name, text in sections.items())
    path = folder / "config.toml"
    path.write_text(
        f'method = "lora"\n{extra}\n[model]\nbase_model = "{model}"\nunet_dtype = "float32"\ntext_encoder_dtype = "float32"\n'
        f'train_dtype = "float32"\n[workspace]\ndir = "{workspace or folder / "ws"}"\nrun_name = "tiny"\n'
        f'[[concepts]]\nname = "shapes"\npath = "{data}"\n{body}\n'
    )
    return path


def train_in_process(config_path: Path):
    """Set up and train a config in this process; returns the recipe, its model the trained one (the caller saves,
    then calls `finish(recipe)`)."""
    from tui_trainer.config import load_config
    from tui_trainer.runs.layout import create_run_dir
    from tui_trainer.train.entry import TrainRecipe
    from tui_trainer.train.monitor import RunMonitor

    config = load_config(config_path)
    run = create_run_dir(config_path.parent / "ws", "tiny", config_path.read_text())
    monitor = RunMonitor(run)
    recipe = TrainRecipe(config, config_path, run, monitor)
    try:
        recipe.setup()
        assert recipe.train() == "completed"
    except BaseException:
        finish(recipe)
        raise
    return recipe


def finish(recipe) -> None:
    """Free what a recipe from `train_in_process` holds and close its run's files."""
    recipe.cleanup()
    recipe.monitor.close()


def stop_and_resume(config_path: Path, stop_step: int) -> Path:
    """Train `config_path` with `tui-trainer train`, stopped by a viewer's stop command after `stop_step`, then
    `tui-trainer resume` it to the end; returns the run folder (its status said stopped before the resume)."""
    import json

    import pytest

    from tui_trainer.cli import main
    from tui_trainer.runs.commands import send_command
    from tui_trainer.runs.layout import RunDir
    from tui_trainer.train.monitor import RunMonitor

    original = RunMonitor.step

    def stop_at(self, event, *args, **kwargs):
        original(self, event, *args, **kwargs)
        if event.step == stop_step:
            send_command(RunDir(self.run.path), "stop")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RunMonitor, "step", stop_at)
        assert main(["train", str(config_path)]) == 0
    (run,) = (config_path.parent / "ws" / "runs").iterdir()
    assert json.loads((run / "status.json").read_text())["state"] == "stopped"
    assert main(["resume", str(run)]) == 0
    return run


def assert_nf4_with_lora_on_top(transformer, *quantized_parts) -> None:
    """Every plain Linear of `transformer` and of each other part is a bitsandbytes nf4 layer (uint8 storage), and
    the transformer trains LoRA weights only, some of them moved off zero."""
    import bitsandbytes as bnb
    import torch

    for part in (transformer, *quantized_parts):
        quantized = [layer for layer in part.modules() if isinstance(layer, bnb.nn.Linear4bit)]
        plain = [name for name, layer in part.named_modules() if type(layer) is torch.nn.Linear and "lora_" not in name]
        assert quantized and not plain
        assert all(layer.weight.dtype == torch.uint8 for layer in quantized)
    trained = {name: param for name, param in transformer.named_parameters() if param.requires_grad}
    assert trained and all("lora_" in name for name in trained)
    assert any(float(param.detach().abs().max()) > 0 for name, param in trained.items() if "lora_B" in name)


def assert_flow_preset_estimate(name: str, result) -> None:
    """A flow preset's estimate: VRAM and RAM in every phase (loading and both caches included), an nf4 transformer at
    most 0.6 bytes a parameter, and the comment's 'about N GiB' within 1 GiB of the total, under its 'Targets N GB'."""
    import re

    from tui_trainer.config import load_preset, preset_text
    from tui_trainer.units import GIB

    if load_preset(name).parts.denoiser.dtype.value == "nf4":
        assert result.parts["transformer"].bytes / result.parts["transformer"].params <= 0.6
    assert {"loading", "training_step", "text_caching", "latent_caching"} <= set(result.phases)
    assert all(phase.vram_bytes > 0 and phase.ram_bytes > 0 for phase in result.phases.values())
    comment = preset_text(name).split("\nversion")[0]
    about = float(re.search(r"about (\d+) GiB", comment).group(1))
    target = float(re.search(r"Targets (\d+) GB", comment).group(1))
    assert abs(result.total_bytes / GIB - about) <= 1.0, (result.total_bytes / GIB, about)
    assert result.total_bytes / GIB < target


def merged_as_comfyui_does(model: Path, lora_file: Path, folder: Path):
    """The tiny Z-Image's transformer in the original layout with a 'comfyui' LoRA file merged the way ComfyUI merges a
    LoRA (comfy/weight_adapter/lora.py: W + alpha / rank x up @ down), read back by diffusers' own
    ZImageTransformer2DModel.from_single_file. Asserts every key is one ComfyUI's generic key map reads
    (`diffusion_model.<module of the original state dict>`, comfy/lora.py model_lora_keys_unet), with the shapes it multiplies."""
    from diffusers import ZImageTransformer2DModel
    from safetensors.torch import load_file, save_file

    from tui_trainer.train.original_layout import z_image_original_state_dict

    original = z_image_original_state_dict(load_file(model / "transformer" / "diffusion_pytorch_model.safetensors"))
    lora = load_file(lora_file)
    modules = {key.removesuffix(".lora_up.weight") for key in lora if key.endswith(".lora_up.weight")}
    assert set(lora) == {f"{module}.{suffix}" for module in modules for suffix in ("lora_up.weight", "lora_down.weight", "alpha")}
    for module in modules:
        weight = module.removeprefix("diffusion_model.") + ".weight"
        assert module.startswith("diffusion_model.") and weight in original, module
        up, down, alpha = lora[f"{module}.lora_up.weight"], lora[f"{module}.lora_down.weight"], lora[f"{module}.alpha"]
        assert alpha.ndim == 0 and up.shape[1] == down.shape[0]
        assert (up.shape[0], down.shape[1]) == original[weight].shape, module
        original[weight] = original[weight] + float(alpha) / down.shape[0] * (up.float() @ down.float()).to(original[weight].dtype)
    path = folder / f"{lora_file.stem}-merged.safetensors"
    save_file({f"model.diffusion_model.{key}": value.contiguous() for key, value in original.items()}, path)
    return ZImageTransformer2DModel.from_single_file(str(path), config=str(model), subfolder="transformer", local_files_only=True)


def assert_comfyui_lora_is_the_trained_one(model: Path, lora_file: Path, trained, folder: Path) -> None:
    """Merged as ComfyUI does (merged_as_comfyui_does), the file gives every adapted weight of `trained` (a peft-wrapped
    diffusers transformer) as base + peft's own delta, and leaves every other weight as it was."""
    import torch

    merged = merged_as_comfyui_does(model, lora_file, folder).state_dict()
    expected = {key.replace(".base_layer.", "."): value for key, value in trained.state_dict().items() if "lora_" not in key}
    deltas = {f"{name}.weight": module.get_delta_weight("default").detach() for name, module in trained.named_modules()
              if hasattr(module, "get_delta_weight") and "default" in getattr(module, "lora_A", {})}
    assert deltas and any(float(delta.abs().max()) > 0 for delta in deltas.values())
    assert set(merged) == set(expected)
    for key, value in expected.items():
        want = value.float() + deltas[key].float() if key in deltas else value.float()
        assert torch.allclose(merged[key].float(), want, atol=1e-5), key


def flow_preset_config(folder: Path, preset: str, model: Path, data: Path, sample: dict, denoiser_dtype: str = "",
                       **training) -> Path:
    """A shipped flow preset pointed at a tiny model and dataset: 64 px, 4 steps at LR 0.01, `sample` (64 px, 2 steps)
    and backups every 2 steps, 32 text tokens; the transformer's dtype replaced when `denoiser_dtype` is given. Asserts
    the saved file keeps that dtype."""
    import tomllib

    from tui_trainer.config import config_from_dict, load_preset, save_config

    folder.mkdir(parents=True, exist_ok=True)
    document = load_preset(preset).model_dump(mode="json", exclude_none=True)
    document["model"].update(base_model=str(model), train_dtype="float32")
    document["workspace"].update(dir=str(folder / "ws"), run_name="tiny")
    document["training"].update({"resolution": "64", "batch_size": 2, "max_steps": 4, "seed": 5, "dataloader_workers": 0,
                                 "tensorboard": False, "gradient_checkpointing": False, **training})
    document["optimizer"]["learning_rate"] = 0.01
    if denoiser_dtype:
        document["parts"]["denoiser"]["dtype"] = denoiser_dtype
    document["concepts"] = [{"name": "shapes", "path": str(data)}]
    document["samples"] = [{"steps": 2, "width": 64, "height": 64, **sample}]
    document["sampling"] = {"every": 2, "unit": "steps"}
    document["backup"] = {"every": 2, "unit": "steps"}
    document["flow"] = {**document.get("flow", {}), "max_sequence_length": 32}
    path = folder / "config.toml"
    save_config(config_from_dict(document), path)
    assert tomllib.loads(path.read_text())["parts"]["denoiser"]["dtype"] == document["parts"]["denoiser"]["dtype"]
    return path

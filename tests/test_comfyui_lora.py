"""output_format = "comfyui": a Z-Image LoRA in ComfyUI's own names (the original layout, q/k/v fused into qkv).

ComfyUI is not installable here, so its loader is replayed: every key must be one comfy/lora.py's generic key map reads
(`diffusion_model.<module of the original state dict>`) with the shapes comfy/weight_adapter/lora.py multiplies, and
merging it as ComfyUI does (W + alpha / rank x up @ down) into the original-layout base, read back by diffusers' own
single-file converter, must give the diffusers-layout base with the same LoRA fused by ZImagePipeline."""

from __future__ import annotations

from pathlib import Path

import pytest

from train_support import assert_comfyui_lora_is_the_trained_one, finish, merged_as_comfyui_does, train_in_process

from tui_trainer.config.enums import Family

COMFYUI_MODULES = (
    "layers.0.attention.qkv", "layers.0.attention.out", "layers.1.feed_forward.w2", "noise_refiner.0.adaLN_modulation.0",
    "context_refiner.0.attention.qkv", "x_embedder", "final_layer.linear", "final_layer.adaLN_modulation.1", "cap_embedder.1",
)
"""Modules of ComfyUI's Z-Image model that a 'full' LoRA adapts, copied from ComfyUI's own table (comfy/utils.py
z_image_to_diffusers: add_block_keys and MAP_BASIC), an oracle independent of our converter."""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny Z-Image folder and a 64 px dataset, built once."""
    from tui_trainer.devkit.datasets import make_dataset
    from tui_trainer.devkit.tiny_families import save_tiny_model

    root = tmp_path_factory.mktemp("comfyui")
    return save_tiny_model(root / "model", Family.Z_IMAGE), make_dataset(root / "data", ((64, 64, 4),))


def _fused_by_the_pipeline(model: Path, diffusers_lora: Path) -> dict:
    from diffusers import ZImagePipeline

    pipeline = ZImagePipeline.from_pretrained(str(model))
    pipeline.load_lora_weights(str(diffusers_lora))
    pipeline.fuse_lora()
    pipeline.unload_lora_weights()
    return pipeline.transformer.state_dict()


def _assert_same_weights(merged, expected: dict, base: dict) -> None:
    import torch

    state = merged.state_dict()
    assert set(state) == set(expected)
    changed = [key for key in expected if not torch.equal(expected[key], base[key])]
    assert any(".to_q." in key for key in changed) and any("all_final_layer" in key for key in changed)
    for key in expected:
        assert torch.allclose(state[key], expected[key], atol=1e-5), key


def test_a_random_full_lora_merged_like_comfyui_equals_the_pipelines_fused_lora(tiny, tmp_path: Path):
    """Every 'full' target (attention, feed-forward, adaLN, embedders, final layer), alpha != rank, random A and B."""
    import torch
    from diffusers import ZImagePipeline, ZImageTransformer2DModel
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model_state_dict
    from safetensors import safe_open
    from safetensors.torch import load_file

    from tui_trainer.config.enums import LoraTargets
    from tui_trainer.config.schema import LoraConfig
    from tui_trainer.models.families import family_spec
    from tui_trainer.train.saving import save_comfyui_lora, save_diffusers_lora

    model, _ = tiny
    transformer = ZImageTransformer2DModel.from_pretrained(str(model / "transformer"))
    targets = family_spec(Family.Z_IMAGE).lora_target_modules[LoraTargets.FULL]["transformer"]
    transformer.add_adapter(PeftLoraConfig(r=4, lora_alpha=6.0, target_modules=list(targets)))
    generator = torch.Generator().manual_seed(0)
    for name, param in transformer.named_parameters():
        if "lora_" in name:
            param.data = torch.randn(param.shape, generator=generator) * 0.2
    state = get_peft_model_state_dict(transformer)

    comfyui = save_comfyui_lora(state, tmp_path / "z.safetensors", {"modelspec.architecture": "z-image/lora"},
                                LoraConfig(rank=4, alpha=6.0), "z_image")
    diffusers_lora = save_diffusers_lora(ZImagePipeline, {"transformer": state}, tmp_path / "diffusers",
                                         {"transformer": transformer.peft_config["default"].to_dict()})

    file = load_file(comfyui)
    assert file["diffusion_model.layers.0.attention.qkv.lora_down.weight"].shape == (12, 32)  # q, k, v downs stacked: rank 3r
    assert file["diffusion_model.layers.0.attention.qkv.lora_up.weight"].shape == (96, 12)
    assert float(file["diffusion_model.layers.0.attention.qkv.alpha"]) == 18.0 and float(file["diffusion_model.layers.0.attention.out.alpha"]) == 6.0
    written = {key.removeprefix("diffusion_model.").removesuffix(".lora_up.weight") for key in file if key.endswith(".lora_up.weight")}
    assert set(COMFYUI_MODULES) <= written
    with safe_open(str(comfyui), "pt") as handle:
        assert handle.metadata()["modelspec.architecture"] == "z-image/lora"

    base = load_file(model / "transformer" / "diffusion_pytorch_model.safetensors")
    _assert_same_weights(merged_as_comfyui_does(model, comfyui, tmp_path), _fused_by_the_pipeline(model, diffusers_lora), base)


def test_a_lora_on_only_some_of_q_k_v_is_refused_naming_the_keys():
    import torch

    from tui_trainer.config.schema import LoraConfig
    from tui_trainer.train.original_layout import ConversionError
    from tui_trainer.train.saving import comfyui_lora_state_dict

    state = {"layers.0.attention.to_q.lora_A.weight": torch.ones(2, 4), "layers.0.attention.to_q.lora_B.weight": torch.ones(4, 2)}
    with pytest.raises(ConversionError, match=r"layers\.0\.attention\.to_k\.weight.*to_q, to_k and to_v together"):
        comfyui_lora_state_dict(state, LoraConfig(rank=2, alpha=2.0), "z_image")


@pytest.mark.parametrize(("document", "message"), [
    ('method = "finetune"\n[model]\nfamily = "z_image"\nbase_model = "m"\n',
     "workspace.output_format: 'comfyui' does not fit method 'finetune'; allowed: diffusers, single_file"),
    ('[model]\nfamily = "sd15"\nbase_model = "m"\n',
     "workspace.output_format: 'comfyui' is the LoRA layout of Z-Image (6B; base and Turbo) only; Stable Diffusion 1.5 has "
     "none here: use 'diffusers'"),
], ids=["finetune", "sd15"])
def test_config_validate_refuses_comfyui_outside_z_image_lora(document: str, message: str, tmp_path: Path, capsys):
    from tui_trainer.cli import main

    path = tmp_path / "c.toml"
    path.write_text(document + '[workspace]\noutput_format = "comfyui"\n')
    assert main(["config", "validate", str(path)]) == 2
    assert f"{path}: {message}" in capsys.readouterr().err
    path.write_text('[model]\nfamily = "z_image"\nbase_model = "m"\n[workspace]\noutput_format = "comfyui"\n')
    assert main(["config", "validate", str(path)]) == 0


def test_the_trainer_refuses_comfyui_for_other_families_and_for_a_trained_text_encoder():
    from tui_trainer.config import config_from_dict
    from tui_trainer.train.methods import lora

    def problems(family: str, **parts) -> list[str]:
        return lora.check(config_from_dict({"model": {"family": family, "base_model": "m"}, "parts": parts,
                                            "workspace": {"output_format": "comfyui"}}))

    assert problems("z_image") == []
    assert problems("flux1_dev") == ["workspace.output_format 'comfyui' is the LoRA layout of Z-Image (6B; base and Turbo) only; "
                                     "FLUX.1-dev (12B) has none here: use 'diffusers'"]
    assert problems("z_image", text_encoder={"train": True}) == [
        "workspace.output_format 'comfyui' holds the denoiser's LoRA only; set parts.text_encoder.train = false"]


def test_the_z_image_preset_trains_and_writes_a_comfyui_lora_of_the_trained_weights(tiny, tmp_path: Path):
    """z-image-lora with output_format = "comfyui" (float32 here, 2 steps): the file the trainer's final save writes holds the
    trained adapters (merged as ComfyUI does: base + peft's own delta) and the metadata of the other LoRA files."""
    from safetensors import safe_open

    from tui_trainer.config import config_from_dict, load_preset, save_config

    model, data = tiny
    document = load_preset("z-image-lora").model_dump(mode="json", exclude_none=True)
    document["model"].update(base_model=str(model), train_dtype="float32")
    document["parts"]["denoiser"]["dtype"] = document["parts"]["text_encoder"]["dtype"] = "float32"
    document["workspace"].update(dir=str(tmp_path / "ws"), run_name="tiny", output_format="comfyui")
    document["training"].update(resolution="64", batch_size=2, max_steps=2, seed=5, dataloader_workers=0, tensorboard=False,
                                gradient_checkpointing=False)
    document["optimizer"]["learning_rate"] = 0.01
    document["flow"]["max_sequence_length"] = 32
    document |= {"concepts": [{"name": "shapes", "path": str(data)}], "sampling": {"every": 0}, "backup": {"every": 0}}
    save_config(config_from_dict(document), tmp_path / "config.toml")

    recipe = train_in_process(tmp_path / "config.toml")
    try:
        (saved,) = recipe.save()
        written = saved.path
        assert (written, saved.format) == (recipe.run.output_dir / "tiny.safetensors", "comfyui") and written.is_file()
        with safe_open(str(written), "pt") as handle:
            metadata = handle.metadata()
        assert metadata["modelspec.architecture"] == "z-image/lora" and metadata["ss_network_dim"] == "16"
        assert 'output_format = "comfyui"' in metadata["tui_trainer_config"]
        assert_comfyui_lora_is_the_trained_one(model, written, recipe.accelerator.unwrap_model(recipe.model.unet), tmp_path)
    finally:
        finish(recipe)


def test_a_diffusers_that_renames_z_image_keys_differently_is_refused_before_training(monkeypatch):
    from diffusers.loaders import single_file_utils

    from tui_trainer.config import config_from_dict
    from tui_trainer.train.methods import lora

    def converter_without_renames(checkpoint, **kwargs):
        return checkpoint

    config = config_from_dict({"model": {"family": "z_image", "base_model": "m"}, "workspace": {"output_format": "comfyui"}})
    assert lora.check(config) == []
    monkeypatch.setattr(single_file_utils, "convert_z_image_transformer_checkpoint_to_diffusers", converter_without_renames)
    (problem,) = lora.check(config)
    assert problem.startswith("workspace.output_format 'comfyui': Z-Image original layout does not read back with "
                              "diffusers' converter: ")

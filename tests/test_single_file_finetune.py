"""A flow family's finetune as one transformer file in its original single-file layout (FLUX.1 / Chroma: BFL's keys;
Z-Image: ComfyUI's; Qwen-Image: diffusers' own), read back by diffusers' own from_single_file; the fallback that keeps
the weights when the layout cannot hold them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tui_trainer.config.enums import Family

FLUX_WIDE = {"patch_size": 1, "in_channels": 64, "num_layers": 1, "num_single_layers": 1, "attention_head_dim": 128,
             "num_attention_heads": 24, "joint_attention_dim": 32, "axes_dims_rope": [16, 56, 56]}
"""FLUX.1's own 3072 width (the one diffusers' converter reads back), one block of each kind, small text inputs."""

WIDE_MODELS = {
    Family.FLUX1_DEV: ("FluxTransformer2DModel", {**FLUX_WIDE, "pooled_projection_dim": 32, "guidance_embeds": True}),
    Family.FLUX1_SCHNELL: ("FluxTransformer2DModel", {**FLUX_WIDE, "pooled_projection_dim": 32, "guidance_embeds": False}),
    Family.CHROMA: ("ChromaTransformer2DModel", {**FLUX_WIDE, "approximator_hidden_dim": 32, "approximator_layers": 1}),
}


def patterned(class_name: str, config: dict[str, Any]):
    """A bfloat16 transformer built on the meta device, every tensor filled with its own row pattern (cheap: one row
    vector per tensor), so a swapped, misplaced or reordered row block reads back different."""
    import diffusers
    import torch

    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("meta"):
            model = getattr(diffusers, class_name)(**config)
    finally:
        torch.set_default_dtype(default)
    model.to_empty(device="cpu")
    with torch.no_grad():
        for index, tensor in enumerate(model.state_dict().values()):
            rows = torch.sin(torch.arange(tensor.shape[0], dtype=torch.float32) * 0.731 + index)
            tensor.copy_(rows.view(-1, *[1] * (tensor.dim() - 1)).expand_as(tensor))
    return model


def write_and_read_back(family: Family, model, folder: Path):
    """Our single file of `model`, loaded by diffusers' from_single_file with the model's config; returns (file's
    tensors, loaded model)."""
    import torch
    from safetensors.torch import load_file, save_file

    from tui_trainer.train.original_layout import single_file_state_dict

    path = folder / "transformer.safetensors"
    save_file(single_file_state_dict(family, {"unet": model}), path)
    model.save_config(folder / "config" / "transformer")
    loaded = type(model).from_single_file(str(path), config=str(folder / "config"), subfolder="transformer",
                                          torch_dtype=torch.bfloat16, local_files_only=True)
    return load_file(path), loaded


def assert_same_weights(loaded, source) -> None:
    import torch

    ours, theirs = source.state_dict(), loaded.state_dict()
    assert set(theirs) == set(ours)
    assert [key for key in ours if not torch.equal(theirs[key], ours[key])] == []


@pytest.mark.parametrize("family", list(WIDE_MODELS), ids=lambda family: family.value)
def test_flux_and_chroma_files_have_bfl_keys_and_read_back_weight_for_weight(family: Family, tmp_path: Path):
    """Every weight of a 3072-wide transformer comes back from diffusers' loader; the file holds BFL's fused tensors."""
    model = patterned(*WIDE_MODELS[family])
    tensors, loaded = write_and_read_back(family, model, tmp_path)
    assert_same_weights(loaded, model)
    assert tensors["double_blocks.0.img_attn.qkv.weight"].shape == (3 * 3072, 3072)
    assert tensors["single_blocks.0.linear1.weight"].shape == (3 * 3072 + 4 * 3072, 3072)  # q, k, v, MLP in
    assert not any(key.startswith(("model.", "transformer_blocks.", "single_transformer_blocks.")) for key in tensors)
    if family is Family.CHROMA:
        assert "distilled_guidance_layer.norms.0.scale" in tensors and not any("_mod." in key for key in tensors)
    else:
        assert ("guidance_in.in_layer.weight" in tensors) == (family is Family.FLUX1_DEV)
        state = model.state_dict()
        shift_scale = tensors["final_layer.adaLN_modulation.1.weight"]
        assert shift_scale[:3072].equal(state["norm_out.linear.weight"][3072:])  # BFL: shift first; diffusers: scale first


@pytest.mark.parametrize("family", [Family.Z_IMAGE, Family.QWEN_IMAGE], ids=lambda family: family.value)
def test_z_image_and_qwen_image_files_read_back_weight_for_weight(family: Family, tmp_path: Path):
    """Their converters have no fixed width: the tiny models round-trip (Z-Image with ComfyUI's fused qkv, Qwen-Image
    with diffusers' own names)."""
    from tui_trainer.devkit.tiny_families import TINY_QWEN_IMAGE, TINY_Z_IMAGE

    config = TINY_Z_IMAGE if family is Family.Z_IMAGE else TINY_QWEN_IMAGE
    model = patterned("ZImageTransformer2DModel" if family is Family.Z_IMAGE else "QwenImageTransformer2DModel", config)
    tensors, loaded = write_and_read_back(family, model, tmp_path)
    assert_same_weights(loaded, model)
    if family is Family.Z_IMAGE:
        assert "layers.0.attention.qkv.weight" in tensors and not any(".to_q." in key for key in tensors)
    else:
        assert set(tensors) == set(model.state_dict())


def test_a_transformer_not_3072_wide_is_refused_by_name_and_diffusers_would_not_read_it(tmp_path: Path):
    """The width check stands for a real limit: diffusers' converter itself fails on the tiny FLUX.1's file."""
    from diffusers import FluxTransformer2DModel

    from tui_trainer.devkit.tiny_families import TINY_FLUX
    from tui_trainer.train.original_layout import LAYOUTS, TRANSFORMER_LAYOUTS, ConversionError, convert_part, original_state_dict

    tiny = FluxTransformer2DModel(**TINY_FLUX, pooled_projection_dim=32, guidance_embeds=True)
    with pytest.raises(ConversionError, match=r"FluxTransformer2DModel is 32 wide .* assumes 3072"):
        convert_part(tiny, "flux", "")
    layout = TRANSFORMER_LAYOUTS["flux"]
    state = tiny.state_dict()
    converted = original_state_dict(state, layout.key_layout(state), layout.swapped_halves)
    with pytest.raises(ConversionError, match="diffusers' single-file converter fails on it"):
        LAYOUTS["flux"][1](tiny, converted, "")


def test_the_read_back_check_catches_wrong_values_not_only_wrong_shapes(monkeypatch: pytest.MonkeyPatch):
    """Without BFL's (shift, scale) order every shape still fits; the values read back do not."""
    from dataclasses import replace

    from tui_trainer.train import original_layout

    model = patterned(*WIDE_MODELS[Family.FLUX1_SCHNELL])
    monkeypatch.setitem(original_layout.TRANSFORMER_LAYOUTS, "flux", replace(original_layout.TRANSFORMER_LAYOUTS["flux"], swapped_halves=frozenset()))
    with pytest.raises(original_layout.ConversionError, match=r"values that differ \['norm_out.linear.bias', 'norm_out.linear.weight'\]"):
        original_layout.convert_part(model, "flux", "")


FINETUNE_PRESETS = {Family.FLUX1_DEV: "flux1-dev-finetune", Family.Z_IMAGE: "z-image-finetune"}


def single_file_finetune(folder: Path, family: Family) -> Path:
    """The family's finetune preset on its tiny model: output_format single_file, float32, 64 px, 2 steps."""
    from tui_trainer.config import config_from_dict, load_preset, save_config
    from tui_trainer.devkit.datasets import make_dataset
    from tui_trainer.devkit.tiny_families import save_tiny_model

    document = load_preset(FINETUNE_PRESETS[family]).model_dump(mode="json", exclude_none=True)
    document["model"].update(base_model=str(save_tiny_model(folder / "model", family)), train_dtype="float32")
    document["parts"] = {name: {**part, "dtype": "float32"} for name, part in document["parts"].items()}
    document["workspace"].update(dir=str(folder / "ws"), run_name="tiny", output_format="single_file")
    document["training"].update(resolution="64", batch_size=2, max_steps=2, seed=5, dataloader_workers=0,
                                tensorboard=False, gradient_checkpointing=False)
    document["optimizer"]["learning_rate"] = 0.01
    document["concepts"] = [{"name": "shapes", "path": str(make_dataset(folder / "data", ((64, 64, 2),)))}]
    document["sampling"], document["backup"] = {"every": 0}, {"every": 0}
    document["flow"] = {**document.get("flow", {}), "max_sequence_length": 32}
    path = folder / "config.toml"
    save_config(config_from_dict(document), path)
    return path


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("family", list(FINETUNE_PRESETS), ids=lambda family: family.value)
def test_a_single_file_finetune_writes_the_transformer_or_keeps_it_in_a_folder(family: Family, tmp_path: Path):
    """Z-Image: one original-layout file with the trained weights and checkpoint metadata. The tiny FLUX.1 (32 wide,
    which diffusers' converter cannot read back): the diffusers folder, and a warning that says why."""
    import diffusers
    from safetensors import safe_open
    from train_support import finish, train_in_process

    recipe = train_in_process(single_file_finetune(tmp_path, family))
    try:
        (saved,) = recipe.save()
        trained = recipe.accelerator.unwrap_model(recipe.model.unet)
        model = Path(recipe.config.model.base_model)
        events = [json.loads(line) for line in recipe.run.events_file.read_text().splitlines()]
        warnings = [event["message"] for event in events if event["type"] == "warning" and "output_format" in event["message"]]
        if family is Family.FLUX1_DEV:
            assert saved.format == "diffusers" and saved.path == recipe.run.output_dir / "tiny"
            assert warnings == [saved.warning] and "32 wide" in saved.warning and str(saved.path) in saved.warning
            loaded = diffusers.FluxPipeline.from_pretrained(str(saved.path)).transformer
        else:
            assert saved.format == "single_file" and saved.path == recipe.run.output_dir / "tiny.safetensors" and warnings == []
            with safe_open(str(saved.path), "pt") as handle:
                assert handle.metadata()["modelspec.architecture"] == "z-image"
                assert "layers.0.attention.qkv.weight" in handle.keys()
            loaded = type(trained).from_single_file(str(saved.path), config=str(model), subfolder="transformer", local_files_only=True)
        base = type(trained).from_pretrained(str(model), subfolder="transformer")
        ours, theirs, before = trained.state_dict(), loaded.state_dict(), base.state_dict()
        assert set(theirs) == set(ours) and all(theirs[key].equal(ours[key]) for key in ours)
        assert any(not ours[key].equal(before[key]) for key in ours)
    finally:
        finish(recipe)


def test_a_key_the_layout_does_not_know_is_named():
    from tui_trainer.train.original_layout import TRANSFORMER_LAYOUTS, ConversionError

    with pytest.raises(ConversionError, match=r"FLUX.1 key 'transformer_blocks.0.attn.to_gate.weight' has no place"):
        TRANSFORMER_LAYOUTS["flux"].key_layout(["x_embedder.weight", "transformer_blocks.0.attn.to_gate.weight"])

"""model.transformer: a flow family's transformer read from one .safetensors file, the other parts from base_model."""

from __future__ import annotations

from pathlib import Path

import pytest

from tui_trainer.config.enums import Family


@pytest.fixture(scope="module")
def tiny_flux(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tui_trainer.devkit.tiny_families import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("single-file") / "flux", Family.FLUX1_DEV)


def _config(model: Path, transformer: Path | str, family: Family = Family.FLUX1_DEV, dtype: str = "float32"):
    from tui_trainer.config import config_from_dict

    return config_from_dict({
        "model": {"family": family.value, "base_model": str(model), "transformer": str(transformer), "train_dtype": "float32"},
        "parts": {"denoiser": {"dtype": dtype}},
        "concepts": [{"name": "shapes", "path": str(model)}],
    })


@pytest.mark.parametrize("family", [Family.FLUX1_DEV, Family.QWEN_IMAGE], ids=lambda family: family.value)
def test_the_files_weights_replace_the_base_models(family: Family, tiny_flux: Path, tmp_path: Path):
    """A diffusers-layout transformer file (every weight doubled) is what the trainer loads, in the part's dtype;
    the VAE and text encoders are still the base model's."""
    import torch
    from safetensors.torch import load_file, save_file

    from tui_trainer.devkit.tiny_families import save_tiny_model
    from tui_trainer.train.loading import load_model

    model = tiny_flux if family is Family.FLUX1_DEV else save_tiny_model(tmp_path / family.value, family)
    base = load_file(model / "transformer" / "diffusion_pytorch_model.safetensors")
    doubled = {key: value * 2 for key, value in base.items()}
    save_file(doubled, tmp_path / "my-transformer.safetensors")

    parts = load_model(_config(model, tmp_path / "my-transformer.safetensors", family=family, dtype="bfloat16"))
    loaded = parts.unet.state_dict()
    assert set(loaded) == set(doubled)
    assert all(torch.equal(loaded[key], doubled[key].to(torch.bfloat16)) for key in doubled)
    vae = load_file(model / "vae" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(parts.vae.state_dict()[key], vae[key]) for key in vae)


def test_a_file_that_is_not_a_transformer_names_the_key_and_the_file(tiny_flux: Path, tmp_path: Path):
    from tui_trainer.train.errors import ModelLoadError
    from tui_trainer.train.loading import load_model

    vae_file = tiny_flux / "vae" / "diffusion_pytorch_model.safetensors"
    with pytest.raises(ModelLoadError, match=r"model\.transformer .*diffusion_pytorch_model\.safetensors: not a FLUX\.1"):
        load_model(_config(tiny_flux, vae_file))
    (tmp_path / "flux.ckpt").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match=r"model\.transformer .*flux\.ckpt: not a \.safetensors file"):
        load_model(_config(tiny_flux, tmp_path / "flux.ckpt"))


def test_families_without_a_separate_transformer_refuse_the_key(tiny_flux: Path):
    from tui_trainer.models.problems import family_problems

    problems = family_problems(_config(tiny_flux, "unet.safetensors", family=Family.SD15))
    assert [(problem.key, problem.message) for problem in problems] == [
        ("model.transformer", "Stable Diffusion 1.5 does not load its denoiser from a separate file; leave it unset"),
    ]
    assert family_problems(_config(tiny_flux, "flux.safetensors")) == []


def test_an_original_layout_z_image_file_is_converted(tmp_path: Path):
    """Z-Image's original layout (fused qkv, ComfyUI's model.diffusion_model. prefix) loads as the diffusers model."""
    import torch
    from safetensors.torch import load_file, save_file

    from tui_trainer.devkit.tiny_families import save_tiny_model
    from tui_trainer.train.loading import load_model
    from tui_trainer.train.original_layout import z_image_original_state_dict

    model = save_tiny_model(tmp_path / "z-image", Family.Z_IMAGE)
    state = {key: value + 1 for key, value in load_file(model / "transformer" / "diffusion_pytorch_model.safetensors").items()}
    original = {f"model.diffusion_model.{key}": value for key, value in z_image_original_state_dict(state).items()}
    assert any(".attention.qkv." in key for key in original) and not any(".to_q." in key for key in original)
    save_file(original, tmp_path / "z-image-original.safetensors")

    loaded = load_model(_config(model, tmp_path / "z-image-original.safetensors", family=Family.Z_IMAGE)).unet.state_dict()
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[key], state[key]) for key in state)

"""An nf4 denoiser read from a diffusers folder is quantised layer by layer as it is read (train.loading.load_nf4_model):
the same weights as loading it whole and quantising after, without holding the whole part in the compute dtype."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tui_trainer.config.enums import Family


@pytest.fixture(scope="module")
def tiny_flux(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny FLUX.1-dev folder, its transformer stored in float32 over several shards (an index file)."""
    import torch
    from diffusers import FluxTransformer2DModel

    from tui_trainer.devkit.tiny_families import save_tiny_model

    model = save_tiny_model(tmp_path_factory.mktemp("nf4") / "flux", Family.FLUX1_DEV)
    transformer = FluxTransformer2DModel.from_pretrained(model / "transformer", torch_dtype=torch.float32)
    shutil.rmtree(model / "transformer")
    transformer.save_pretrained(model / "transformer", max_shard_size="20KB")
    assert len(json.loads((model / "transformer" / "diffusion_pytorch_model.safetensors.index.json").read_text())["weight_map"]) > 10
    return model


def _state(module) -> dict:
    return {key: value.clone() for key, value in module.state_dict().items()}


def test_streamed_nf4_weights_equal_loading_whole_then_quantizing(tiny_flux: Path):
    """Every tensor (packed nf4 bytes, absmax and quant state, 16-bit norms and biases) is the one the whole-part path
    makes, from float32 files into a bfloat16 compute dtype; every Linear is a 4-bit layer."""
    import bitsandbytes as bnb
    import torch
    from diffusers import FluxTransformer2DModel

    from tui_trainer.train.loading import load_nf4_model, quantize_nf4

    streamed = load_nf4_model(tiny_flux / "transformer", torch.bfloat16)
    whole = FluxTransformer2DModel.from_pretrained(tiny_flux / "transformer", torch_dtype=torch.bfloat16)
    assert quantize_nf4(whole, torch.bfloat16) > 0
    expected, actual = _state(whole), _state(streamed)
    assert expected.keys() == actual.keys()
    assert [key for key in expected if expected[key].dtype != actual[key].dtype or not torch.equal(expected[key], actual[key])] == []
    assert not any(type(layer) is torch.nn.Linear for layer in streamed.modules())
    assert all(layer.weight.bnb_quantized for layer in streamed.modules() if isinstance(layer, bnb.nn.Linear4bit))
    assert not streamed.training


def test_a_folder_whose_keys_are_not_the_models_is_read_whole(tiny_flux: Path, tmp_path: Path):
    """A file with a key the model lacks (a layout diffusers converts while loading): no streamed model, so the
    loader falls back to diffusers' own loading."""
    import torch
    from safetensors.torch import load_file, save_file

    from tui_trainer.train.loading import load_nf4_model

    folder = tmp_path / "transformer"
    folder.mkdir()
    shutil.copy(tiny_flux / "transformer" / "config.json", folder)
    weights = {}
    for shard in sorted((tiny_flux / "transformer").glob("*.safetensors")):
        weights |= load_file(str(shard))
    weights["renamed.weight"] = weights.pop("proj_out.weight")
    save_file(weights, str(folder / "diffusion_pytorch_model.safetensors"))
    assert load_nf4_model(folder, torch.bfloat16) is None
    assert load_nf4_model(tmp_path, torch.bfloat16) is None  # no weight files at all


def _config(folder: Path, model: Path, base_model: str = ""):
    from train_support import flow_preset_config

    from tui_trainer.config import load_config
    from tui_trainer.devkit.datasets import make_dataset

    config = load_config(flow_preset_config(folder, "flux1-dev-lora", model, make_dataset(folder / "data", ((64, 64, 2),)),
                                            {"prompt": "red"}))
    if base_model:
        config = config.model_copy(update={"model": config.model.model_copy(update={"base_model": base_model})})
    return config


def test_load_model_uses_the_streamed_transformer_for_an_nf4_denoiser(tiny_flux: Path, tmp_path: Path, monkeypatch):
    """The preset's nf4 transformer (from a diffusers folder) is the one load_nf4_model made."""
    import bitsandbytes as bnb

    from tui_trainer.train import loading

    made = []
    real = loading.load_nf4_model

    def recorded(folder, compute):
        made.append(real(folder, compute))
        return made[-1]

    monkeypatch.setattr(loading, "load_nf4_model", recorded)
    parts = loading.load_model(_config(tmp_path, tiny_flux))
    assert len(made) == 1 and parts.unet is made[0]
    assert isinstance(parts.unet.proj_out, bnb.nn.Linear4bit)


def test_a_repo_id_is_fetched_as_a_folder_first_cache_then_hub(tiny_flux: Path, tmp_path: Path, monkeypatch):
    """For a repo id the pipeline folder comes from diffusers' own download (the local cache first, then the hub),
    and the transformer is streamed from it; with HF_HUB_OFFLINE and nothing cached the error says what to do."""
    import torch
    from diffusers import DiffusionPipeline

    from tui_trainer.train import loading
    from tui_trainer.train.errors import ModelLoadError

    calls = []

    def download(repo_id, local_files_only=False, **kwargs):
        calls.append((repo_id, local_files_only))
        if local_files_only:
            raise OSError("not in the cache")
        return str(tiny_flux)

    monkeypatch.setattr(DiffusionPipeline, "download", download)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    parts = loading.load_model(_config(tmp_path, tiny_flux, "black-forest-labs/FLUX.1-dev"))
    assert calls == [("black-forest-labs/FLUX.1-dev", True), ("black-forest-labs/FLUX.1-dev", False)]
    assert parts.source == "black-forest-labs/FLUX.1-dev"
    assert not any(type(layer) is torch.nn.Linear for layer in parts.unet.modules())

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE"):
        loading.load_model(_config(tmp_path / "offline", tiny_flux, "black-forest-labs/FLUX.1-dev"))


def test_the_estimate_reads_an_nf4_denoiser_from_a_folder_at_its_nf4_size():
    """loading RAM: the nf4 transformer at its nf4 size from a repo id, in the compute dtype from a single file."""
    from tui_trainer.config import load_preset
    from tui_trainer.estimate import estimate
    from tui_trainer.units import GIB

    config = load_preset("flux1-dev-lora")
    folder = estimate(config)
    single = estimate(config.model_copy(update={"model": config.model.model_copy(update={"base_model": "flux1-dev.safetensors"})}))
    transformer = folder.parts["transformer"]
    assert folder.phases["loading"].ram_bytes - single.phases["loading"].ram_bytes == transformer.bytes - 2 * transformer.params
    assert 18 * GIB < folder.phases["loading"].ram_bytes < 19 * GIB
    assert folder.ram_bytes == folder.phases["loading"].ram_bytes

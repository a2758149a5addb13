"""The family registry is complete: every Family has its facts (models/families.py) and its trainer module
(train/families/), and each family's tiny model trains two steps, saves in every output format the trainer
accepts for it, and loads back with the loader users use (diffusers; peft where diffusers has no LoRA loader)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from train_support import assert_comfyui_lora_is_the_trained_one, finish, train_in_process

from tui_trainer.config.enums import Family, Method

TRAINED_METHODS = (Method.LORA, Method.FINETUNE)
"""The methods every family trains (embedding and inpaint are SD-only)."""


def test_every_family_has_facts_a_trainer_module_and_a_tiny_model():
    from tui_trainer.devkit.tiny_families import TINY_FAMILY_MODELS
    from tui_trainer.models.families import FAMILIES
    from tui_trainer.train.families import TRAIN_FAMILIES

    assert set(FAMILIES) == set(TRAIN_FAMILIES) == set(TINY_FAMILY_MODELS) == set(Family)
    for family, module in TRAIN_FAMILIES.items():
        assert module.family is family
        assert module.objective.name and module.objective.prediction_type == FAMILIES[family].prediction_type
        assert module.saving.base_model_version and module.saving.modelspec_architecture
        assert set(module.saving.kohya_prefixes) <= {part.name for part in FAMILIES[family].parts.values()}


def test_no_code_outside_the_registries_names_a_family():
    """Family-specific behaviour lives in models/families.py and train/families/ (config and devkit may name families)."""
    root = Path(__file__).resolve().parents[1] / "tui_trainer"
    allowed = ("models/families.py", "train/families/", "config/", "devkit/")
    naming = re.compile(r"\bFamily\.[A-Z_]+\b")
    found = [
        f"{path.relative_to(root)}:{number}: {line.strip()}"
        for path in sorted(root.rglob("*.py")) if not str(path.relative_to(root)).startswith(allowed)
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if naming.search(line)
    ]
    assert found == []


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """Factory: (tiny model folder, dataset folder) of a family, built once."""
    from tui_trainer.devkit.datasets import make_dataset
    from tui_trainer.devkit.tiny_families import TINY_FAMILY_MODELS, save_tiny_model

    root = tmp_path_factory.mktemp("registry")
    built: dict[Family, tuple[Path, Path]] = {}

    def get(family: Family) -> tuple[Path, Path]:
        if family not in built:
            side = TINY_FAMILY_MODELS[family].resolution
            built[family] = save_tiny_model(root / family.value, family), make_dataset(root / f"{family.value}-data", ((side, side, 4),))
        return built[family]

    return get


def _config(folder: Path, family: Family, method: Method, model: Path, data: Path):
    from tui_trainer.config.io import config_from_dict, save_config
    from tui_trainer.devkit.tiny_families import TINY_FAMILY_MODELS

    document = {
        "method": method.value,
        "version": 2,
        "model": {"family": family.value, "base_model": str(model), "train_dtype": "float32"},
        "parts": {"denoiser": {"dtype": "float32"}, "text_encoder": {"dtype": "float32", "train": False}},
        "workspace": {"dir": str(folder / "ws"), "run_name": "tiny", "output_format": "diffusers"},
        "training": {"resolution": str(TINY_FAMILY_MODELS[family].resolution), "batch_size": 2, "max_steps": 2, "seed": 3,
                     "dataloader_workers": 0, "tensorboard": False, "gradient_checkpointing": False},
        "optimizer": {"learning_rate": 0.002},
        "lora": {"rank": 4, "alpha": 4.0},
        "sampling": {"every": 0}, "backup": {"every": 0},
        "concepts": [{"name": "shapes", "path": str(data)}],
    }
    path = folder / "config.toml"
    save_config(config_from_dict(document), path)
    return path


def _base_pipeline(family: Family, model: Path) -> Any:
    import diffusers

    from tui_trainer.train.families import train_family

    return diffusers.DiffusionPipeline.from_pretrained(str(model), **train_family(family).pipeline_extras)


def _denoiser_name(family: Family) -> str:
    from tui_trainer.models.families import family_spec

    return family_spec(family).denoiser.name


def _assert_parts_match_the_facts(family: Family, pipeline: Any, separate: dict[str, Any]) -> None:
    """Every part the facts name is a component of `pipeline` (or of `separate`: parts loaded on their own, e.g.
    Stable Cascade's EfficientNet encoder) of the class the facts name."""
    from tui_trainer.models.families import family_spec

    for part in family_spec(family).parts.values():
        module = getattr(pipeline, part.name, None) or separate.get(part.name)
        assert module is not None, f"{family.value}: no {part.name} in {type(pipeline).__name__}"
        if "." in part.architecture:
            assert type(module).__name__ == part.architecture.rsplit(".", 1)[-1]


def _load_lora(family: Family, model: Path, saved: Path, fmt: str) -> Any:
    """A fresh base pipeline with the saved LoRA loaded; returns its denoiser."""
    import json

    import peft
    from safetensors import safe_open
    from safetensors.torch import load_file

    pipeline = _base_pipeline(family, model)
    denoiser = getattr(pipeline, _denoiser_name(family))
    if hasattr(pipeline, "load_lora_weights"):
        pipeline.load_lora_weights(str(saved))
        return denoiser
    assert fmt == "diffusers"
    file = saved / "pytorch_lora_weights.safetensors"
    prefix = f"{_denoiser_name(family)}."
    with safe_open(str(file), "pt") as handle:
        settings = {key.removeprefix(prefix): value for key, value in json.loads(handle.metadata()["lora_adapter_metadata"]).items()}
    peft.inject_adapter_in_model(peft.LoraConfig(**{key: settings[key] for key in ("r", "lora_alpha", "target_modules")}), denoiser)
    result = peft.set_peft_model_state_dict(denoiser, {key.removeprefix(prefix): value for key, value in load_file(file).items()})
    assert not result.unexpected_keys
    return denoiser


def _load_finetune(family: Family, model: Path, saved: Path, fmt: str, separate: dict[str, Any]) -> Any:
    """The saved full model loaded with diffusers; returns its denoiser."""
    import diffusers

    from tui_trainer.train.families import train_family

    extras = train_family(family).pipeline_extras
    if fmt == "single_file" and not train_family(family).single_file_pipeline:  # a flow family's transformer alone
        denoiser = getattr(_base_pipeline(family, model), _denoiser_name(family))
        return type(denoiser).from_single_file(str(saved), config=str(model), subfolder=_denoiser_name(family), local_files_only=True)
    if fmt == "single_file":
        pipeline_class = getattr(diffusers, train_family(family).single_file_pipeline)
        pipeline = pipeline_class.from_single_file(str(saved), config=str(model), **extras)
    else:
        pipeline = diffusers.DiffusionPipeline.from_pretrained(str(saved), **extras)
    _assert_parts_match_the_facts(family, pipeline, separate)
    return getattr(pipeline, _denoiser_name(family))


def _lora_weights_arrived(denoiser: Any, trained: Any) -> None:
    """The loaded denoiser holds adapters whose up (lora_B) weights are the trained, non-zero ones."""
    def up_weights(module: Any) -> dict[str, Any]:
        return {re.sub(r"\.default(_\d+)?", "", name): value for name, value in module.state_dict().items() if "lora_B" in name}

    loaded, ours = up_weights(denoiser), up_weights(trained)
    assert loaded and set(loaded) == set(ours)
    assert any(float(value.abs().max()) > 0 for value in loaded.values())
    for name, value in ours.items():
        assert (loaded[name].float() - value.float()).abs().max() < 1e-5, name


def _finetune_weights_arrived(denoiser: Any, trained: Any, base: Any) -> None:
    """The loaded denoiser is the trained one, and training changed it."""
    loaded, ours, before = denoiser.state_dict(), trained.state_dict(), base.state_dict()
    assert set(loaded) == set(ours)
    assert all((loaded[key].float() - ours[key].float()).abs().max() < 1e-6 for key in ours)
    assert any((ours[key].float() - before[key].float()).abs().max() > 0 for key in ours)


@pytest.mark.slow
@pytest.mark.parametrize("method", TRAINED_METHODS, ids=lambda method: method.value)
@pytest.mark.parametrize("family", list(Family), ids=lambda family: family.value)
def test_each_family_trains_saves_every_format_and_loads_back(family: Family, method: Method, tiny, tmp_path: Path):
    from tui_trainer.config.schema import METHOD_OUTPUT_FORMATS
    from tui_trainer.models.families import family_spec
    from tui_trainer.train.methods import method_module
    from tui_trainer.train.saving import kohya_metadata

    model, data = tiny(family)
    recipe = train_in_process(_config(tmp_path, family, method, model, data))
    assert recipe.global_step == 2
    try:
        separate = {family_spec(family).autoencoder.name: recipe.model.vae}
        _assert_parts_match_the_facts(family, _base_pipeline(family, model), separate)
        trained = recipe.accelerator.unwrap_model(recipe.model.unet)
        accepted = []
        for fmt in METHOD_OUTPUT_FORMATS[method]:
            workspace = recipe.config.workspace.model_copy(update={"output_format": fmt})
            config = recipe.config.model_copy(update={"workspace": workspace})
            if method_module(method).check(config):
                continue
            accepted.append(fmt.value)
            metadata = kohya_metadata(config, recipe.run.config_file.read_text(encoding="utf-8"))
            (saved,) = recipe.method.save(recipe.model, recipe.parts, config, tmp_path / "out", f"tiny-{fmt.value}", metadata,
                                          recipe.accelerator.unwrap_model)
            if fmt.value == "comfyui":  # ComfyUI is not installable: its merge is replayed
                assert_comfyui_lora_is_the_trained_one(model, saved.path, trained, tmp_path)
            elif method is Method.LORA:
                _lora_weights_arrived(_load_lora(family, model, saved.path, fmt.value), trained)
            else:
                base = getattr(_base_pipeline(family, model), _denoiser_name(family))
                # saved.format: a model the single-file layout cannot hold (the tiny FLUX.1) is saved as a diffusers folder
                _finetune_weights_arrived(_load_finetune(family, model, saved.path, saved.format, separate), trained, base)
    finally:
        finish(recipe)
    assert "diffusers" in accepted

"""Full finetune: the UNet's own weights (and optionally the text encoders') train in their stored dtype.

Output: a diffusers pipeline folder, or one original-layout .safetensors checkpoint (A1111 / ComfyUI /
diffusers from_single_file) holding every part; for a flow family (FLUX.1, Chroma, Z-Image, Qwen-Image) the transformer
alone, the VAE and text encoders being the base model's.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

from tui_trainer.config.enums import OutputFormat, WeightDtype
from tui_trainer.config.schema import TrainConfig
from tui_trainer.models.families import family_spec
from tui_trainer.train.families import train_family
from tui_trainer.train.methods import SavedFile, TrainablePart
from tui_trainer.train.model_parts import TEXT_ENCODER_PARTS, ModelParts, part_configs, part_key
from tui_trainer.train.original_layout import ConversionError, single_file_state_dict
from tui_trainer.train.saving import write_folder_atomically

UNTRAINABLE_DTYPES = (WeightDtype.FLOAT16, WeightDtype.FLOAT8, WeightDtype.NF4)
"""Storage dtypes full weights cannot train in (no fp32 master copy: fp16 updates underflow; fp8/nf4 are frozen formats)."""


def check(config: TrainConfig) -> list[str]:
    """Problems with a finetune config, found before loading anything."""
    trained = [name for name, part in part_configs(config).items() if part.train]
    if not trained:
        return ["nothing to train: set parts.denoiser.train or parts.text_encoder.train to true"]
    dtypes = {name: part.dtype for name, part in part_configs(config).items()}
    problems = [
        f"{part_key(name, 'dtype')} {dtypes[name].value!r} cannot be finetuned ({name}); use float32 or bfloat16"
        for name in trained if dtypes[name] in UNTRAINABLE_DTYPES
    ]
    family = config.model.family
    if config.output_format is OutputFormat.SINGLE_FILE and not family_spec(family).single_file_layout:
        problems.append(f"workspace.output_format 'single_file' has no original layout for {family.value}; use 'diffusers'")
    return problems


def prepare(model: ModelParts, config: TrainConfig) -> list[TrainablePart]:
    """Make every weight of each trained part trainable."""
    parts = []
    for name, part_config in part_configs(config).items():
        if not part_config.train or (name in TEXT_ENCODER_PARTS and name not in model.text_encoders):
            continue
        module = model.part(name)
        module.requires_grad_(True)
        parts.append(TrainablePart(name, module, list(module.parameters()), part_config, config.learning_rate_for(part_config)))
    return parts


def full_model(model: ModelParts, parts: list[TrainablePart], unwrap: Callable) -> dict[str, torch.nn.Module]:
    """Every model part by pipeline name, trained ones unwrapped from their accelerate wrappers."""
    modules = {"unet": model.unet, "vae": model.vae, **model.text_encoders}
    return modules | {part.name: unwrap(part.module) for part in parts}


def save_pipeline(model: ModelParts, modules: dict[str, torch.nn.Module], path: Path) -> Path:
    """A diffusers pipeline folder (safetensors) of the base model with the trained parts."""
    pipeline = model.pipeline_class(**model.pipeline_components(modules), **model.tokenizers, scheduler=model.scheduler, **train_family(model.family).pipeline_extras)
    return write_folder_atomically(path, lambda tmp: pipeline.save_pretrained(tmp, safe_serialization=True))


def save_tensors_atomically(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> Path:
    """safetensors' save_file into a fsynced temp file beside `path`, then a rename (no second copy in memory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_single_file(model: ModelParts, modules: dict[str, torch.nn.Module], path: Path, metadata: dict[str, str]) -> Path:
    """One original-layout checkpoint of every part."""
    return save_tensors_atomically(single_file_state_dict(model.family, modules), path, metadata)


def checkpoint_metadata(metadata: dict[str, str]) -> dict[str, str]:
    """Run metadata without the LoRA-only keys, with the full model's architecture."""
    info = {key: value for key, value in metadata.items() if not key.startswith("ss_network")}
    info["modelspec.architecture"] = metadata["modelspec.architecture"].removesuffix("/lora")
    return info


WRITERS: dict[OutputFormat, Callable[[ModelParts, dict[str, torch.nn.Module], Path, str, dict[str, str]], Path]] = {
    OutputFormat.DIFFUSERS: lambda model, modules, folder, stem, metadata: save_pipeline(model, modules, folder / stem),
    OutputFormat.SINGLE_FILE: lambda model, modules, folder, stem, metadata: save_single_file(
        model, modules, folder / f"{stem}.safetensors", checkpoint_metadata(metadata)),
}
"""Writer of each full-model output format."""


def save(
    model: ModelParts, parts: list[TrainablePart], config: TrainConfig, folder: Path, stem: str,
    metadata: dict[str, str], unwrap: Callable = lambda module: module,
) -> list[SavedFile]:
    """Write the whole model in the configured format; a model the original single-file layout cannot hold (a
    ConversionError, found before anything is written) is written as a diffusers folder instead, with a warning."""
    fmt = config.output_format
    modules = full_model(model, parts, unwrap)
    try:
        return [SavedFile(WRITERS[fmt](model, modules, folder, stem, metadata), fmt.value)]
    except ConversionError as error:
        path = WRITERS[OutputFormat.DIFFUSERS](model, modules, folder, stem, metadata)
        return [SavedFile(path, OutputFormat.DIFFUSERS.value, warning=(
            f"workspace.output_format 'single_file': {error}; the weights are saved as a diffusers folder instead: {path}"))]

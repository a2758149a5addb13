"""LoRA / LoHa / LoKr adapters (peft) on the UNet and, optionally, the text encoders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import peft
import torch

from tui_trainer.config.enums import LoraType, OutputFormat
from tui_trainer.config.schema import LoraConfig, TrainConfig
from tui_trainer.models.families import family_spec
from tui_trainer.models.problems import comfyui_format_problem
from tui_trainer.train import saving
from tui_trainer.train.families import train_family
from tui_trainer.train.model_parts import ModelParts, part_configs, part_key
from tui_trainer.train.original_layout import ORIGINAL_KEY_LAYOUTS, ConversionError
from tui_trainer.train.methods import SavedFile, TrainablePart

ADAPTERS: dict[LoraType, Callable[[LoraConfig, list[str]], peft.PeftConfig]] = {
    LoraType.LORA: lambda lora, targets: peft.LoraConfig(
        r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets
    ),
    LoraType.LOHA: lambda lora, targets: peft.LoHaConfig(
        r=lora.rank, alpha=lora.alpha, module_dropout=lora.dropout, target_modules=targets
    ),
    LoraType.LOKR: lambda lora, targets: peft.LoKrConfig(
        r=lora.rank, alpha=lora.alpha, module_dropout=lora.dropout, target_modules=targets
    ),
}
"""peft adapter config per adapter kind."""

FORMATS: dict[OutputFormat, frozenset[LoraType]] = {
    OutputFormat.KOHYA: frozenset(LoraType),
    OutputFormat.DIFFUSERS: frozenset({LoraType.LORA}),
    OutputFormat.COMFYUI: frozenset({LoraType.LORA}),
}
"""Adapter kinds each output format can hold (diffusers' LoRA loader reads plain LoRA only; the ComfyUI layout fuses
plain LoRAs)."""


def check(config: TrainConfig) -> list[str]:
    """Problems with a LoRA config, found before loading anything."""
    problems = []
    if config.lora.type not in FORMATS.get(config.output_format, frozenset()):
        problems.append(f"workspace.output_format {config.output_format.value!r} cannot hold {config.lora.type.value}; use 'kohya'")
    if config.output_format is OutputFormat.KOHYA and not train_family(config.model.family).saving.kohya_prefixes:
        problems.append(f"workspace.output_format 'kohya' has no key layout for {config.model.family.value} here; use 'diffusers'")
    comfyui = comfyui_format_problem(config)
    if comfyui:
        problems.append(f"workspace.output_format {comfyui}")
    elif config.output_format is OutputFormat.COMFYUI:
        try:  # checks the names against diffusers' converter now rather than at the save after training
            ORIGINAL_KEY_LAYOUTS[family_spec(config.model.family).comfyui_lora_layout]()
        except ConversionError as error:
            problems.append(f"workspace.output_format 'comfyui': {error}")
    trained_others = [name for name, part in part_configs(config).items() if part.train and name != "unet"]
    if config.output_format is OutputFormat.COMFYUI and trained_others:
        keys = ", ".join(part_key(name, "train") for name in trained_others)
        problems.append(f"workspace.output_format 'comfyui' holds the denoiser's LoRA only; set {keys} = false")
    if not any(part.train for part in part_configs(config).values()):
        problems.append("nothing to train: set parts.denoiser.train or parts.text_encoder.train to true")
    return problems


def prepare(model: ModelParts, config: TrainConfig) -> list[TrainablePart]:
    """Add adapters to every part that trains; adapter weights are float32 whatever the base dtype."""
    targets = family_spec(config.model.family).lora_target_modules[config.lora.targets]
    parts = []
    for name, part_config in part_configs(config).items():
        if not part_config.train or (name != "unet" and name not in model.text_encoders):
            continue
        module = model.part(name)
        adapter = ADAPTERS[config.lora.type](config.lora, list(targets[model.pipeline_names.get(name, name)]))
        if name == "unet" and hasattr(module, "add_adapter"):
            module.add_adapter(adapter)
        else:
            # transformers' own add_adapter needs a newer peft than the registry has, and PixArt's and Stable
            # Cascade's denoisers have none: peft injects directly.
            peft.inject_adapter_in_model(adapter, module)
        params = [param for param in module.parameters() if param.requires_grad]
        for param in params:
            param.data = param.data.float()
        parts.append(TrainablePart(name, module, params, part_config, config.learning_rate_for(part_config)))
    return parts


def adapter_state_dicts(parts: list[TrainablePart], unwrap: Callable = lambda module: module) -> dict[str, dict[str, torch.Tensor]]:
    """peft state dict (adapter weights only, no adapter name in keys) of each trained part."""
    return {part.name: peft.get_peft_model_state_dict(unwrap(part.module)) for part in parts}


def save(
    model: ModelParts, parts: list[TrainablePart], config: TrainConfig, folder: Path, stem: str,
    metadata: dict[str, str], unwrap: Callable = lambda module: module,
) -> list[SavedFile]:
    """Write the adapters in the configured format."""
    fmt = config.output_format
    path = WRITERS[fmt](model, parts, config, folder, stem, metadata, unwrap)
    return [SavedFile(path, fmt.value)]


def _save_kohya(model: ModelParts, parts: list[TrainablePart], config: TrainConfig, folder: Path, stem: str,
                metadata: dict[str, str], unwrap: Callable) -> Path:
    path = folder / f"{stem}.safetensors"
    saving.save_kohya(adapter_state_dicts(parts, unwrap), path, metadata, config.lora, train_family(model.family).saving.kohya_prefixes)
    return path


def _save_diffusers(model: ModelParts, parts: list[TrainablePart], config: TrainConfig, folder: Path, stem: str,
                    metadata: dict[str, str], unwrap: Callable) -> Path:
    names = {part.name: model.pipeline_names.get(part.name, part.name) for part in parts}
    adapter_metadata = {names[part.name]: unwrap(part.module).peft_config["default"].to_dict() for part in parts}
    layers = {names[name]: state_dict for name, state_dict in adapter_state_dicts(parts, unwrap).items()}
    return saving.save_diffusers_lora(model.pipeline_class, layers, folder / stem, adapter_metadata)


def _save_comfyui(model: ModelParts, parts: list[TrainablePart], config: TrainConfig, folder: Path, stem: str,
                  metadata: dict[str, str], unwrap: Callable) -> Path:
    (denoiser,) = (part for part in parts if part.name == "unet")
    layout = family_spec(model.family).comfyui_lora_layout
    return saving.save_comfyui_lora(adapter_state_dicts([denoiser], unwrap)["unet"], folder / f"{stem}.safetensors", metadata,
                                    config.lora, layout)


WRITERS: dict[OutputFormat, Callable[..., Path]] = {
    OutputFormat.KOHYA: _save_kohya,
    OutputFormat.DIFFUSERS: _save_diffusers,
    OutputFormat.COMFYUI: _save_comfyui,
}
"""Writer per LoRA output format: (model, parts, config, folder, stem, metadata, unwrap) -> the path written."""

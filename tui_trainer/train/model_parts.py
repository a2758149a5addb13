"""The loaded model the trainer works with: its parts by name, tokenizers and schedulers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from tui_trainer.config.enums import Family
from tui_trainer.config.schema import PartConfig, TrainConfig

TEXT_ENCODER_PARTS = ("text_encoder", "text_encoder_2")

PART_TABLES = {"unet": "denoiser", "text_encoder": "text_encoder", "text_encoder_2": "text_encoder_2"}
"""The trainer's name of each configurable part (ModelParts attribute) -> its [parts.*] table."""


def part_configs(config: TrainConfig) -> dict[str, PartConfig]:
    """The [parts.*] settings of every configurable part, by the trainer's part name."""
    return {name: getattr(config.parts, table) for name, table in PART_TABLES.items()}


def part_key(name: str, field: str) -> str:
    """The dotted config key of a part's setting: ('unet', 'dtype') -> 'parts.denoiser.dtype'."""
    return f"parts.{PART_TABLES[name]}.{field}"


@dataclass
class ModelParts:
    """The loaded pieces of a diffusion model the trainer works with."""

    family: Family
    pipeline_class: type
    unet: torch.nn.Module
    vae: torch.nn.Module
    noise_scheduler: Any
    prediction_type: str
    text_encoders: dict[str, torch.nn.Module] = field(default_factory=dict)
    tokenizers: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    scheduler: Any = None
    """The base model's own sampling scheduler (saved with full models)."""
    pipeline_names: dict[str, str | None] = field(default_factory=dict)
    """Pipeline component name of a part where it differs (unet -> transformer / prior; None = not a component)."""
    freed_text_encoders: tuple[str, ...] = ()
    """Text encoders freed after their outputs were cached: pipelines get None for them."""

    def pipeline_components(self, modules: dict[str, torch.nn.Module]) -> dict[str, torch.nn.Module | None]:
        """Parts by trainer name -> the pipeline constructor's keyword arguments (None for a freed text encoder)."""
        named = {self.pipeline_names.get(name, name): module for name, module in modules.items()}
        return {name: None for name in self.freed_text_encoders} | {name: module for name, module in named.items() if name is not None}

    def free_text_encoders(self) -> None:
        """Drop the text encoders (the caller keeps no other reference): what they make is cached from here on."""
        self.freed_text_encoders = tuple(self.text_encoders)
        self.text_encoders = {}

    def part(self, name: str) -> torch.nn.Module:
        """A model part by name: unet, vae, text_encoder or text_encoder_2."""
        return self.text_encoders[name] if name in TEXT_ENCODER_PARTS else getattr(self, name)

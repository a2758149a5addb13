"""Training methods: one module each, sharing the loop. A method adds what trains and writes what comes out.

Each method module provides:
    prepare(model: ModelParts, config: TrainConfig) -> list[TrainablePart]
    check(config: TrainConfig) -> list[str]               problems found before any loading
    save(model, parts, config, folder, stem, metadata) -> list[SavedFile]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

from tui_trainer.config.enums import Method
from tui_trainer.config.schema import PartTrainingConfig


@dataclass
class TrainablePart:
    """One model part with trainable parameters: one optimizer param group."""

    name: str
    """unet, text_encoder or text_encoder_2."""
    module: torch.nn.Module
    params: list[torch.nn.Parameter]
    config: PartTrainingConfig
    learning_rate: float

    @property
    def num_params(self) -> int:
        """Number of trainable values."""
        return sum(param.numel() for param in self.params)


@dataclass(frozen=True)
class SavedFile:
    """A written model file or folder."""

    path: Path
    format: str


def method_module(method: Method) -> ModuleType:
    """The module implementing `method`."""
    from tui_trainer.train.methods import lora

    methods: dict[Method, ModuleType] = {Method.LORA: lora}
    if method not in methods:
        raise NotImplementedError(f"method {method.value!r} is not available yet; available: {', '.join(m.value for m in methods)}")
    return methods[method]

"""Training methods: one module each, sharing the loop. A method adds what trains and writes what comes out.

Each method module provides:
    prepare(model: ModelParts, config: TrainConfig) -> list[TrainablePart]
    check(config: TrainConfig) -> list[str]               problems found before any loading
    save(model, parts, config, folder, stem, metadata) -> list[SavedFile]
and may provide (see `method_hook` for the defaults):
    captions(config, captions) -> list[str]               captions as the text encoders see them
    unet_inputs(model, batch, latents) -> Tensor | None   extra denoiser input channels (inpainting)
    mask_source(config) -> MaskSource | None              where each image's mask comes from
and, when its trainable state is more than its parts' parameters (see backup_state below):
    backup_state(parts, unwrap) -> dict[str, Tensor]      tensors a backup must hold to resume exactly
    restore_state(parts, tensors, unwrap) -> None         put them back
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from tui_trainer.config.enums import Method
from tui_trainer.config.schema import PartConfig
from tui_trainer.train.dataset import TrainingBatch
from tui_trainer.train.masks import training_masks


@dataclass
class TrainablePart:
    """One model part with trainable parameters: one optimizer param group."""

    name: str
    """unet, text_encoder or text_encoder_2."""
    module: torch.nn.Module
    params: list[torch.nn.Parameter]
    config: PartConfig
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
    warning: str = ""
    """Why it is not in the configured format (a fallback that kept the weights); empty = it is."""


def keep_captions(config: Any, captions: list[str]) -> list[str]:
    """Captions unchanged (the default)."""
    return captions


def no_unet_inputs(model: Any, batch: TrainingBatch, latents: torch.Tensor) -> None:
    """No extra denoiser inputs (the default)."""
    return None


DEFAULT_HOOKS: dict[str, Callable] = {"captions": keep_captions, "unet_inputs": no_unet_inputs, "mask_source": training_masks}
"""What a method that does not define an optional step hook gets."""


def method_hook(method: ModuleType, name: str) -> Callable:
    """A method module's step hook `name`, or its default."""
    return getattr(method, name, DEFAULT_HOOKS[name])


def method_module(method: Method) -> ModuleType:
    """The module implementing `method`."""
    from tui_trainer.train.methods import embedding, finetune, inpaint, lora

    methods: dict[Method, ModuleType] = {Method.LORA: lora, Method.EMBEDDING: embedding, Method.FINETUNE: finetune, Method.INPAINT: inpaint}
    if method not in methods:
        raise NotImplementedError(f"method {method.value!r} is not available yet; available: {', '.join(m.value for m in methods)}")
    return methods[method]


def _named_params(parts: list[TrainablePart], unwrap: Callable) -> dict[str, torch.nn.Parameter]:
    """Each part's trainable parameters under '<part>.<parameter name>'."""
    named = {}
    for part in parts:
        wanted = {id(param) for param in part.params}
        named.update({f"{part.name}.{name}": param for name, param in unwrap(part.module).named_parameters() if id(param) in wanted})
    return named


def backup_state(method: ModuleType, parts: list[TrainablePart], unwrap: Callable = lambda module: module) -> dict[str, torch.Tensor]:
    """What a backup holds of the trained weights: the method's `backup_state` hook, else every part's trainable
    parameters by name (enough for any method whose TrainablePart.params are module parameters)."""
    hook = getattr(method, "backup_state", None)
    if hook is not None:
        return hook(parts, unwrap)
    return {name: param.detach() for name, param in _named_params(parts, unwrap).items()}


def restore_state(method: ModuleType, parts: list[TrainablePart], tensors: dict[str, torch.Tensor], unwrap: Callable = lambda module: module) -> None:
    """Put a backup's trained weights back (the method's `restore_state` hook, else by parameter name)."""
    hook = getattr(method, "restore_state", None)
    if hook is not None:
        hook(parts, tensors, unwrap)
        return
    named = _named_params(parts, unwrap)
    if named.keys() != tensors.keys():
        missing, extra = sorted(named.keys() - tensors.keys()), sorted(tensors.keys() - named.keys())
        raise ValueError(f"the backup's weights do not fit this model: missing {missing[:3]}, unexpected {extra[:3]}")
    with torch.no_grad():
        for name, param in named.items():
            param.copy_(tensors[name])

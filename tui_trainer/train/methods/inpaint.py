"""Inpainting: an inpainting UNet (latents + mask + masked-image latents in) trained as LoRA (kohya output)
or as a full finetune (diffusers / single_file output), with each image's -masklabel.png or random masks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F

from tui_trainer.config.enums import OutputFormat
from tui_trainer.config.schema import TrainConfig
from tui_trainer.models.families import family_spec
from tui_trainer.train.dataset import TrainingBatch
from tui_trainer.train.loop import encode_latents, input_placement
from tui_trainer.train.masks import MaskSource
from tui_trainer.train.methods import SavedFile, TrainablePart, finetune, lora
from tui_trainer.train.model_parts import ModelParts

TRAINERS: dict[OutputFormat, ModuleType] = {
    OutputFormat.KOHYA: lora,
    OutputFormat.DIFFUSERS: finetune,
    OutputFormat.SINGLE_FILE: finetune,
}
"""What trains, by output format: adapters for a LoRA file, the UNet's own weights for a full model."""


def check(config: TrainConfig) -> list[str]:
    """Problems with an inpainting config, found before loading anything."""
    problems = TRAINERS[config.output_format].check(config)
    if config.training.cache_latents:
        problems.append("inpaint encodes each step's masked image with the VAE: set training.cache_latents = false")
    return problems


def prepare(model: ModelParts, config: TrainConfig) -> list[TrainablePart]:
    """Check the UNet takes inpainting inputs, then prepare as LoRA or finetune."""
    channels = 2 * family_spec(config.model.family).latent_channels + 1
    if model.unet.config.in_channels != channels:
        raise ValueError(
            f"{config.model.base_model} is not an inpainting model: its UNet takes {model.unet.config.in_channels} "
            f"input channels, inpainting needs {channels} (latents, mask, masked-image latents)"
        )
    return TRAINERS[config.output_format].prepare(model, config)


def mask_source(config: TrainConfig) -> MaskSource:
    """Mask files when configured and present, random shapes otherwise."""
    return MaskSource(config.inpaint.use_mask_files, config.inpaint.random_mask_kind)


def unet_inputs(model: ModelParts, batch: TrainingBatch, latents: torch.Tensor) -> torch.Tensor:
    """The mask at latent size and the masked image's latents, prepared as diffusers' inpainting pipeline does
    (binary mask, masked pixels set to 0, nearest-neighbour downsampling)."""
    masks = (batch.masks >= 0.5).to(latents.device, torch.float32)
    masked = batch.pixels.to(latents.device) * (1 - masks)
    small = F.interpolate(masks, size=latents.shape[-2:])
    masked_latents = encode_latents(model.vae, masked.to(*input_placement(model.vae)))
    return torch.cat([small, masked_latents.to(latents.device)], dim=1)


def save(
    model: ModelParts, parts: list[TrainablePart], config: TrainConfig, folder: Path, stem: str,
    metadata: dict[str, str], unwrap: Callable = lambda module: module,
) -> list[SavedFile]:
    """Write the adapters or the whole model, by output format."""
    return TRAINERS[config.output_format].save(model, parts, config, folder, stem, metadata, unwrap)

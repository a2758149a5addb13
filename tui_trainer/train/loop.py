"""The pieces of one training step shared by every method: conditioning, noising, targets and the loss."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from tui_trainer.config.enums import Family, LossType
from tui_trainer.config.schema import TrainingConfig
from tui_trainer.models.families import family_spec
from tui_trainer.train.dataset import TrainingBatch
from tui_trainer.train.model_parts import ModelParts


IMAGE_CONDITIONS: dict[str, Callable[[TrainingBatch], torch.Tensor]] = {
    "time_ids": lambda batch: batch.geometry,
}
"""Added conditions taken from a batch's images rather than its captions."""


def image_conditions(family: Family, batch: TrainingBatch, device: torch.device) -> dict[str, torch.Tensor]:
    """The family's added conditions that come from the batch's images (e.g. SDXL's time ids)."""
    names = [name for name in family_spec(family).added_conditions if name in IMAGE_CONDITIONS]
    return {name: IMAGE_CONDITIONS[name](batch).to(device) for name in names}


def unet_kwargs(family: Family, conditioning: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, Any]:
    """Conditioning tensors -> the denoiser's keyword arguments (the family's added conditions grouped)."""
    kwargs: dict[str, Any] = {name: value.to(dtype) for name, value in conditioning.items()}
    added = {name: kwargs.pop(name) for name in family_spec(family).added_conditions}
    return kwargs | ({"added_cond_kwargs": added} if added else {})


TARGETS: dict[str, Callable[[Any, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "epsilon": lambda scheduler, latents, noise, timesteps: noise,
    "v_prediction": lambda scheduler, latents, noise, timesteps: scheduler.get_velocity(latents, noise, timesteps),
    "sample": lambda scheduler, latents, noise, timesteps: latents,
}
"""What the denoiser is trained to output, by the scheduler's prediction type."""

LOSSES: dict[LossType, Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]] = {
    LossType.MSE: lambda prediction, target, delta: F.mse_loss(prediction, target, reduction="none"),
    LossType.HUBER: lambda prediction, target, delta: F.huber_loss(prediction, target, reduction="none", delta=delta),
}
"""Element-wise losses."""

SNR_WEIGHTS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "epsilon": lambda snr, gamma: torch.clamp(snr, max=gamma) / snr,
    "v_prediction": lambda snr, gamma: torch.clamp(snr, max=gamma) / (snr + 1),
    "sample": lambda snr, gamma: torch.clamp(snr, max=gamma),
}
"""Min-SNR-gamma loss weights (Hang et al. 2023) per prediction type."""


def input_placement(module: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and dtype of `module`'s first parameter (its input layer's): one step into the parameters, where
    diffusers' `.device` and `.dtype` walk every submodule."""
    first = next(module.parameters())
    return first.device, first.dtype


def placed_encoder(encode: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor], autoencoder: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """pixels -> `encode(autoencoder, pixels)`, the pixels moved to the autoencoder's device and dtype, looked up
    once here (the autoencoder must stay where it is while this is used)."""
    device, dtype = input_placement(autoencoder)
    return lambda pixels: encode(autoencoder, pixels.to(device, dtype))


def encode_latents(vae: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Pixels in [-1, 1], on the VAE's device and dtype -> scaled latents (the distribution's mode: deterministic,
    as cached)."""
    with torch.no_grad():
        latents = vae.encode(pixels).latent_dist.mode()
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return ((latents - shift) * vae.config.scaling_factor).float()


def draw_noise(latents: torch.Tensor, training: TrainingConfig, generator: torch.Generator) -> torch.Tensor:
    """Gaussian noise like `latents` (plus training.offset_noise x a per-channel offset), drawn from `generator`."""
    noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    if training.offset_noise:
        offset = torch.randn((latents.shape[0], latents.shape[1], 1, 1), generator=generator, device=latents.device, dtype=latents.dtype)
        noise = noise + training.offset_noise * offset
    return noise


def add_noise(
    scheduler: Any, latents: torch.Tensor, training: TrainingConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noise (with offset noise), uniform timesteps and the noised latents, all drawn from `generator`."""
    noise = draw_noise(latents, training, generator)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],), generator=generator, device=latents.device)
    return noise, timesteps, scheduler.add_noise(latents, noise, timesteps)


def diffusion_loss(
    prediction: torch.Tensor, target: torch.Tensor, timesteps: torch.Tensor, scheduler: Any,
    prediction_type: str, training: TrainingConfig, weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean loss over the batch: element loss (optionally weighted, e.g. by a mask), per-sample mean, min-SNR weight."""
    element = LOSSES[training.loss](prediction.float(), target.float(), training.huber_delta)
    if weights is not None:
        element = element * weights
    per_sample = element.mean(dim=tuple(range(1, element.ndim)))
    if training.min_snr_gamma:
        from diffusers.training_utils import compute_snr  # imported here: the module takes seconds to import

        snr = compute_snr(scheduler, timesteps)
        snr_weight = SNR_WEIGHTS[prediction_type](snr, training.min_snr_gamma)
        per_sample = per_sample * torch.where(snr == 0, torch.ones_like(snr_weight), snr_weight)
    return per_sample.mean()


def denoise_loss(
    model: ModelParts, latents: torch.Tensor, conditioning: dict[str, torch.Tensor], training: TrainingConfig,
    generator: torch.Generator, input_dtype: torch.dtype, autocast: Any,
    extra_channels: torch.Tensor | None = None, weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """One forward pass of the denoiser on noised latents and its loss against the prediction-type target.

    `extra_channels` are concatenated to the noised latents (an inpainting UNet's mask and masked-image
    latents); `weights` weight the element loss (masked training)."""
    scheduler = model.noise_scheduler
    noise, timesteps, noisy = add_noise(scheduler, latents, training, generator)
    target = TARGETS[model.prediction_type](scheduler, latents, noise, timesteps)
    if extra_channels is not None:
        noisy = torch.cat([noisy, extra_channels.to(noisy)], dim=1)
    kwargs = unet_kwargs(model.family, conditioning, input_dtype)
    with autocast():
        prediction = model.unet(noisy.to(input_dtype), timesteps, **kwargs, return_dict=False)[0]
    return diffusion_loss(prediction, target, timesteps, scheduler, model.prediction_type, training, weights)

"""PixArt-alpha: T5 conditioning, size conditioning, and the loss on the transformer's 8-channel output.

The transformer predicts noise (first half of its channels) and a learned-range variance (second half):
the noise half takes the usual loss; `training.variance_loss` adds the variational-bound term that trains
the variance half (Nichol & Dhariwal 2021, hand-written: diffusers has only the sampling side of it).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from tui_trainer.config.enums import Family
from tui_trainer.config.schema import TrainingConfig
from tui_trainer.models.families import family_spec
from tui_trainer.train.families.base import NOISE_PREDICTION, SavingFacts, TrainFamily
from tui_trainer.train.loop import add_noise, diffusion_loss, encode_latents
from tui_trainer.train.model_parts import ModelParts

MAX_TOKENS = 120
"""PixArt-alpha's T5 sequence length."""


def t5_conditioning(model: ModelParts, captions: list[str], device: torch.device) -> dict[str, torch.Tensor]:
    """T5's last hidden state and its attention mask (as PixArtAlphaPipeline.encode_prompt builds them)."""
    tokens = model.tokenizers["tokenizer"](
        captions, padding="max_length", max_length=MAX_TOKENS, truncation=True, add_special_tokens=True, return_tensors="pt",
    )
    mask = tokens.attention_mask.to(device)
    states = model.text_encoders["text_encoder"](tokens.input_ids.to(device), attention_mask=mask)[0]
    return {"encoder_hidden_states": states, "encoder_attention_mask": mask}


def size_conditions(transformer: torch.nn.Module, latents: torch.Tensor, scale: float) -> dict[str, torch.Tensor | None]:
    """The 1024 model's resolution (height, width in px) and aspect-ratio inputs for the batch's bucket."""
    if not transformer.use_additional_conditions:
        return {"resolution": None, "aspect_ratio": None}
    batch, height, width = latents.shape[0], latents.shape[-2] * scale, latents.shape[-1] * scale
    resolution = torch.tensor([[height, width]], device=latents.device).repeat(batch, 1)
    aspect = torch.tensor([[height / width]], device=latents.device).repeat(batch, 1)
    return {"resolution": resolution, "aspect_ratio": aspect}


def _normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def variance_bound(scheduler: Any, latents: torch.Tensor, noisy: torch.Tensor, timesteps: torch.Tensor,
                   epsilon: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) in bits, through the variance output only (the mean
    uses the detached noise prediction), with the learned-range variance PixArt uses; the t = 0 decoder term is
    approximated by the same KL."""
    alphas = scheduler.alphas_cumprod.to(latents.device, torch.float64)
    betas = scheduler.betas.to(latents.device, torch.float64)
    previous = torch.cat([alphas.new_ones(1), alphas[:-1]])
    posterior_var = betas * (1 - previous) / (1 - alphas)
    posterior_log_var = torch.log(torch.cat([posterior_var[1:2], posterior_var[1:]]))
    coef_x0 = betas * previous.sqrt() / (1 - alphas)
    coef_xt = (1 - previous) * (1 - betas).sqrt() / (1 - alphas)

    def at(values: torch.Tensor) -> torch.Tensor:
        return values[timesteps].float().view(-1, *[1] * (latents.ndim - 1))

    x_t = noisy.float()
    true_mean = at(coef_x0) * latents.float() + at(coef_xt) * x_t
    predicted_x0 = (x_t - at((1 - alphas).sqrt()) * epsilon.detach().float()) / at(alphas.sqrt())
    predicted_mean = at(coef_x0) * predicted_x0 + at(coef_xt) * x_t
    fraction = (variance.float() + 1) / 2
    predicted_log_var = fraction * at(torch.log(betas)) + (1 - fraction) * at(posterior_log_var)
    kl = _normal_kl(true_mean, at(posterior_log_var), predicted_mean, predicted_log_var)
    return kl.mean(dim=tuple(range(1, kl.ndim))) / math.log(2.0)


def pixart_loss(
    model: ModelParts, latents: torch.Tensor, conditioning: dict[str, torch.Tensor], training: TrainingConfig,
    generator: torch.Generator, input_dtype: torch.dtype, autocast: Any,
    extra_channels: torch.Tensor | None = None, weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """One transformer pass on noised latents: loss on the noise half (+ the variance bound when configured)."""
    scheduler = model.noise_scheduler
    noise, timesteps, noisy = add_noise(scheduler, latents, training, generator)
    kwargs = {name: value.to(input_dtype) if value.is_floating_point() else value for name, value in conditioning.items()}
    scale = family_spec(model.family).latent_downscale
    with autocast():
        output = model.unet(
            noisy.to(input_dtype), timestep=timesteps, added_cond_kwargs=size_conditions(model.unet, latents, scale),
            return_dict=False, **kwargs,
        )[0]
    epsilon, variance = output.chunk(2, dim=1) if output.shape[1] == 2 * latents.shape[1] else (output, None)
    loss = diffusion_loss(epsilon, noise, timesteps, scheduler, "epsilon", training, weights)
    if training.variance_loss and variance is not None:
        loss = loss + variance_bound(scheduler, latents, noisy, timesteps, epsilon, variance).mean()
    return loss


PIXART_ALPHA = TrainFamily(
    family=Family.PIXART_ALPHA,
    objective=NOISE_PREDICTION,
    conditioning=t5_conditioning,
    loss=pixart_loss,
    encode=encode_latents,
    saving=SavingFacts("pixart_alpha", "pixart-alpha"),
    pipeline_names={"unet": "transformer"},
    sample_inputs=lambda size: {"use_resolution_binning": False, "clean_caption": False},
)
"""PixArt samples at exactly the asked size, its prompt as written."""

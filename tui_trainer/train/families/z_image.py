"""Z-Image (base and Turbo): rectified flow on a 6B single-stream DiT, Qwen3-4B text, FLUX.1's VAE.

ZImageTransformer2DModel takes a list of per-image latents with a frame axis, (channels, 1, h, w), and a list of
per-caption text features (the caption's tokens only, no padding). ZImagePipeline tells it the timestep
1 - sigma and negates its output to get the velocity noise - latents its scheduler steps with; the loss here
does the same, so a trained transformer samples with the pipeline unchanged.
"""

from __future__ import annotations

from typing import Any

import torch

from tui_trainer.config.enums import Family, PredictionType
from tui_trainer.config.schema import TrainingConfig
from tui_trainer.train.families.base import SavingFacts, TrainFamily
from tui_trainer.train.families.flow import FlowSchedule, RectifiedFlow, image_tokens, sample_length, text_pipeline
from tui_trainer.train.loop import diffusion_loss, draw_noise, encode_latents
from tui_trainer.train.model_parts import ModelParts


def z_image_conditioning(model: ModelParts, captions: list[str], device: torch.device) -> dict[str, torch.Tensor]:
    """Qwen3's second-to-last hidden states from ZImagePipeline's encode_prompt (chat template, caption tokens only),
    padded back to max_sequence_length with a mask, so captions of any length batch and cache alike."""
    from diffusers import ZImagePipeline

    length = model.noise_scheduler.max_sequence_length
    # encode_prompt writes the chat-templated prompts into the list it is given: hand it a copy.
    states, _ = text_pipeline(ZImagePipeline, model).encode_prompt(
        list(captions), device=device, do_classifier_free_guidance=False, max_sequence_length=length,
    )
    padded = torch.zeros(len(states), length, states[0].shape[-1], device=device, dtype=states[0].dtype)
    mask = torch.zeros(len(states), length, device=device, dtype=torch.bool)
    for row, caption in enumerate(states):
        padded[row, : len(caption)] = caption
        mask[row, : len(caption)] = True
    return {"encoder_hidden_states": padded, "text_mask": mask}


def z_image_sample_text(
    model: ModelParts, prompt: str, negative_prompt: str, device: torch.device, inputs: dict[str, Any],
) -> dict[str, Any]:
    """ZImagePipeline's per-prompt embedding lists of a sample's prompt and negative prompt."""
    from diffusers import ZImagePipeline

    states, negative = text_pipeline(ZImagePipeline, model).encode_prompt(
        prompt, device=device, do_classifier_free_guidance=True, negative_prompt=negative_prompt,
        max_sequence_length=sample_length(ZImagePipeline, inputs),
    )
    return {"prompt_embeds": states, "negative_prompt_embeds": negative}


def velocity(transformer: torch.nn.Module, noised: torch.Tensor, sigmas: torch.Tensor, captions: list[torch.Tensor]) -> torch.Tensor:
    """The velocity (noise - latents) the transformer predicts for (batch, channels, h, w) noised latents at noise
    levels `sigmas`, called exactly as ZImagePipeline calls it: per-image latents with a frame axis, timestep
    1 - sigma, output negated."""
    out = transformer(list(noised.unsqueeze(2).unbind(0)), 1 - sigmas, captions, return_dict=False)[0]
    return -torch.stack(out).squeeze(2)


def z_image_loss(
    model: ModelParts, latents: torch.Tensor, conditioning: dict[str, torch.Tensor], training: TrainingConfig,
    generator: torch.Generator, input_dtype: torch.dtype, autocast: Any,
    extra_channels: torch.Tensor | None = None, weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """One transformer pass on noised latents and its loss against the velocity noise - latents."""
    schedule: FlowSchedule = model.noise_scheduler
    noise = draw_noise(latents, training, generator)
    sigmas = schedule.sigmas(latents.shape[0], image_tokens(latents), generator, latents.device)
    level = sigmas.view(-1, 1, 1, 1)
    noised = ((1 - level) * latents + level * noise).to(input_dtype)
    states = conditioning["encoder_hidden_states"].to(input_dtype)
    captions = [row[mask] for row, mask in zip(states, conditioning["text_mask"].bool(), strict=True)]
    with autocast():
        prediction = velocity(model.unet, noised, sigmas.to(input_dtype), captions)
    return diffusion_loss(prediction, noise - latents, sigmas, None, PredictionType.FLOW.value, training, weights)


Z_IMAGE = TrainFamily(
    family=Family.Z_IMAGE,
    objective=RectifiedFlow("rectified flow (velocity), shifted noise levels", 512),
    conditioning=z_image_conditioning,
    loss=z_image_loss,
    encode=encode_latents,
    saving=SavingFacts("z_image", "z-image"),
    pipeline_names={"unet": "transformer"},
    samples_with_own_scheduler=True,
    sample_text=z_image_sample_text,
)
"""Z-Image base and Turbo (Turbo samples in about 8 steps without CFG: set sample.steps = 8, sample.cfg = 0)."""

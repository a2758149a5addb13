"""Qwen-Image: rectified flow on a 20B MMDiT, Qwen2.5-VL-7B text (masked, template tokens dropped), a Wan-style VAE.

Matches QwenImagePipeline.__call__: latents packed 2 x 2 like FLUX.1's, the noise level as the timestep (the pipeline
passes t / 1000), img_shapes (1 frame, h / 2, w / 2) for the rotary positions, the text mask, no guidance input
(true_cfg_scale applies only when sampling). Latents are normalised with the VAE's latents_mean / latents_std, the
inverse of the pipeline's decode.
"""

from __future__ import annotations

from typing import Any

import torch

from tui_trainer.config.enums import Family, PredictionType
from tui_trainer.config.schema import TrainingConfig
from tui_trainer.train.families.base import SavingFacts, TrainFamily
from tui_trainer.train.families.flow import FlowSchedule, RectifiedFlow, image_tokens, sample_length, text_pipeline
from tui_trainer.train.loop import diffusion_loss, draw_noise
from tui_trainer.train.model_parts import ModelParts


def qwen_image_conditioning(model: ModelParts, captions: list[str], device: torch.device) -> dict[str, torch.Tensor]:
    """Qwen2.5-VL's last hidden states after the prompt template and its mask, from QwenImagePipeline's encode_prompt,
    zero-padded to the run's text length (so cached captions stack; the loss trims the padding off again)."""
    from diffusers import QwenImagePipeline

    length = model.noise_scheduler.max_sequence_length
    states, mask = text_pipeline(QwenImagePipeline, model).encode_prompt(captions, device=device, max_sequence_length=length)
    if mask is None:
        mask = torch.ones(states.shape[:2], dtype=torch.long, device=states.device)
    padding = length - states.shape[1]
    return {"encoder_hidden_states": torch.nn.functional.pad(states, (0, 0, 0, padding)),
            "encoder_hidden_states_mask": torch.nn.functional.pad(mask, (0, padding))}


def qwen_image_sample_text(
    model: ModelParts, prompt: str, negative_prompt: str, device: torch.device, inputs: dict[str, Any],
) -> dict[str, Any]:
    """QwenImagePipeline's prompt embeddings and masks of a sample's prompt and negative prompt (the negative one counts
    with true_cfg_scale > 1, as in the call itself)."""
    from diffusers import QwenImagePipeline

    pipeline, length = text_pipeline(QwenImagePipeline, model), sample_length(QwenImagePipeline, inputs)
    states, mask = pipeline.encode_prompt(prompt, device=device, max_sequence_length=length)
    negative, negative_mask = pipeline.encode_prompt(negative_prompt, device=device, max_sequence_length=length)
    return {"prompt_embeds": states, "prompt_embeds_mask": mask,
            "negative_prompt_embeds": negative, "negative_prompt_embeds_mask": negative_mask}


def qwen_image_encode(vae: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Pixels in [-1, 1], on the VAE's device and dtype -> one-frame latents (the distribution's mode),
    (x - latents_mean) / latents_std, frame axis dropped."""
    with torch.no_grad():
        latents = vae.encode(pixels.unsqueeze(2)).latent_dist.mode()[:, :, 0].float()
    mean = torch.tensor(vae.config.latents_mean, device=latents.device).view(1, -1, 1, 1)
    std = torch.tensor(vae.config.latents_std, device=latents.device).view(1, -1, 1, 1)
    return (latents - mean) / std


def qwen_image_loss(
    model: ModelParts, latents: torch.Tensor, conditioning: dict[str, torch.Tensor], training: TrainingConfig,
    generator: torch.Generator, input_dtype: torch.dtype, autocast: Any,
    extra_channels: torch.Tensor | None = None, weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """One transformer pass on noised, packed latents and its loss against the velocity (noise - latents)."""
    from diffusers import QwenImagePipeline

    schedule: FlowSchedule = model.noise_scheduler
    mask = conditioning["encoder_hidden_states_mask"].bool()
    length = int(mask.sum(dim=1).max())
    states, mask = conditioning["encoder_hidden_states"][:, :length].to(input_dtype), mask[:, :length]
    batch, channels, height, width = latents.shape
    noise = draw_noise(latents, training, generator)
    sigmas = schedule.sigmas(batch, image_tokens(latents), generator, latents.device)
    level = sigmas.view(-1, 1, 1, 1)
    noisy = ((1 - level) * latents + level * noise).to(input_dtype)
    tokens = QwenImagePipeline._pack_latents(noisy, batch, channels, height, width)
    with autocast():
        prediction = model.unet(
            hidden_states=tokens, timestep=sigmas.to(input_dtype), encoder_hidden_states=states,
            encoder_hidden_states_mask=None if mask.all() else mask, img_shapes=[[(1, height // 2, width // 2)]] * batch,
            return_dict=False,
        )[0]
    velocity = QwenImagePipeline._unpack_latents(prediction, height * 8, width * 8, 8)[:, :, 0]
    return diffusion_loss(velocity, noise - latents, sigmas, None, PredictionType.FLOW.value, training, weights)


QWEN_IMAGE = TrainFamily(
    family=Family.QWEN_IMAGE,
    objective=RectifiedFlow("rectified flow (velocity), shifted noise levels", 512),
    conditioning=qwen_image_conditioning,
    loss=qwen_image_loss,
    encode=qwen_image_encode,
    saving=SavingFacts("qwen_image", "qwen-image"),
    pipeline_names={"unet": "transformer"},
    samples_with_own_scheduler=True,
    cfg_argument="true_cfg_scale",
    sample_text=qwen_image_sample_text,
)
"""512 text tokens: QwenImagePipeline's default max_sequence_length."""

"""FLUX.1-dev and -schnell: rectified flow on a 12B MMDiT, CLIP-L pooled + T5-XXL text, dev's guidance embedding."""

from __future__ import annotations

from typing import Any

import torch

from tui_trainer.config.enums import Family
from tui_trainer.config.schema import TrainingConfig
from tui_trainer.train.families.base import SavingFacts, TrainFamily
from tui_trainer.train.families.flow import RectifiedFlow, flow_loss, sample_length, text_pipeline
from tui_trainer.train.loop import encode_latents
from tui_trainer.train.model_parts import ModelParts


def flux_conditioning(model: ModelParts, captions: list[str], device: torch.device) -> dict[str, torch.Tensor]:
    """T5's hidden states and CLIP's pooled output, from FluxPipeline's own encode_prompt."""
    from diffusers import FluxPipeline

    states, pooled, _ = text_pipeline(FluxPipeline, model).encode_prompt(
        captions, prompt_2=None, device=device, max_sequence_length=model.noise_scheduler.max_sequence_length,
    )
    return {"encoder_hidden_states": states, "pooled_projections": pooled}


def flux_sample_text(
    model: ModelParts, prompt: str, negative_prompt: str, device: torch.device, inputs: dict[str, Any],
) -> dict[str, Any]:
    """FluxPipeline's prompt embeddings of a sample: T5's states and CLIP's pooled output of both prompts (the negative
    one counts only with true_cfg_scale > 1, as in the call itself)."""
    from diffusers import FluxPipeline

    pipeline, length = text_pipeline(FluxPipeline, model), sample_length(FluxPipeline, inputs)
    states, pooled, _ = pipeline.encode_prompt(prompt, prompt_2=None, device=device, max_sequence_length=length)
    negative, negative_pooled, _ = pipeline.encode_prompt(negative_prompt, prompt_2=None, device=device, max_sequence_length=length)
    return {"prompt_embeds": states, "pooled_prompt_embeds": pooled,
            "negative_prompt_embeds": negative, "negative_pooled_prompt_embeds": negative_pooled}


def flux_loss(
    model: ModelParts, latents: torch.Tensor, conditioning: dict[str, torch.Tensor], training: TrainingConfig,
    generator: torch.Generator, input_dtype: torch.dtype, autocast: Any,
    extra_channels: torch.Tensor | None = None, weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """The flow loss with the pooled text and, for a guidance-distilled transformer (dev), flow.guidance."""
    batch = latents.shape[0]
    guidance = None
    if model.unet.config.guidance_embeds:
        guidance = torch.full((batch,), model.noise_scheduler.settings.guidance, device=latents.device, dtype=input_dtype)
    text = {name: value.to(input_dtype) for name, value in conditioning.items()}
    return flow_loss(model, latents, text | {"guidance": guidance}, training, generator, input_dtype, autocast, weights)


def _flux(family: Family, saving: SavingFacts, sequence_length: int, sample_inputs: dict[str, Any]) -> TrainFamily:
    return TrainFamily(
        family=family,
        objective=RectifiedFlow("rectified flow (velocity), shifted noise levels", sequence_length),
        conditioning=flux_conditioning,
        loss=flux_loss,
        encode=encode_latents,
        saving=saving,
        pipeline_names={"unet": "transformer"},
        sample_inputs=lambda size: dict(sample_inputs),
        samples_with_own_scheduler=True,
        sample_text=flux_sample_text,
    )


FLUX1_DEV = _flux(Family.FLUX1_DEV, SavingFacts("flux1", "flux-1-dev"), 512, {})
FLUX1_SCHNELL = _flux(Family.FLUX1_SCHNELL, SavingFacts("flux1", "flux-1-schnell"), 256, {"max_sequence_length": 256})
"""schnell reads 256 T5 tokens and needs no guidance (its samples take few steps: set sample.steps = 4)."""

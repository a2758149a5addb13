"""Chroma: FLUX.1-schnell's transformer with its modulation distilled into one network, T5-XXL only, masked text."""

from __future__ import annotations

from typing import Any

import torch

from tui_trainer.config.enums import Family
from tui_trainer.config.schema import TrainingConfig
from tui_trainer.train.families.base import SavingFacts, TrainFamily
from tui_trainer.train.families.flow import RectifiedFlow, flow_loss, image_tokens, sample_length, text_pipeline
from tui_trainer.train.loop import encode_latents
from tui_trainer.train.model_parts import ModelParts


def chroma_conditioning(model: ModelParts, captions: list[str], device: torch.device) -> dict[str, torch.Tensor]:
    """T5's hidden states and the text mask (the caption and one padding token), from ChromaPipeline's encode_prompt."""
    from diffusers import ChromaPipeline

    states, _, mask, *_ = text_pipeline(ChromaPipeline, model).encode_prompt(
        captions, device=device, do_classifier_free_guidance=False, max_sequence_length=model.noise_scheduler.max_sequence_length,
    )
    return {"encoder_hidden_states": states, "text_mask": mask}


def chroma_sample_text(
    model: ModelParts, prompt: str, negative_prompt: str, device: torch.device, inputs: dict[str, Any],
) -> dict[str, Any]:
    """ChromaPipeline's prompt embeddings and masks of a sample's prompt and negative prompt."""
    from diffusers import ChromaPipeline

    states, _, mask, negative, _, negative_mask = text_pipeline(ChromaPipeline, model).encode_prompt(
        prompt, negative_prompt=negative_prompt, device=device, do_classifier_free_guidance=True,
        max_sequence_length=sample_length(ChromaPipeline, inputs),
    )
    return {"prompt_embeds": states, "prompt_attention_mask": mask,
            "negative_prompt_embeds": negative, "negative_prompt_attention_mask": negative_mask}


def chroma_loss(
    model: ModelParts, latents: torch.Tensor, conditioning: dict[str, torch.Tensor], training: TrainingConfig,
    generator: torch.Generator, input_dtype: torch.dtype, autocast: Any,
    extra_channels: torch.Tensor | None = None, weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """The flow loss with the attention mask over text and image tokens (as ChromaPipeline builds it)."""
    text_mask = conditioning["text_mask"].bool()
    image = torch.ones(latents.shape[0], image_tokens(latents), device=latents.device, dtype=torch.bool)
    text = {"encoder_hidden_states": conditioning["encoder_hidden_states"].to(input_dtype),
            "attention_mask": torch.cat([text_mask, image], dim=1)}
    return flow_loss(model, latents, text, training, generator, input_dtype, autocast, weights)


CHROMA = TrainFamily(
    family=Family.CHROMA,
    objective=RectifiedFlow("rectified flow (velocity), shifted noise levels", 512),
    conditioning=chroma_conditioning,
    loss=chroma_loss,
    encode=encode_latents,
    saving=SavingFacts("chroma", "chroma"),
    pipeline_names={"unet": "transformer"},
    samples_with_own_scheduler=True,
    sample_text=chroma_sample_text,
)

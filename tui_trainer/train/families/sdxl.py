"""Stable Diffusion XL: CLIP-L and OpenCLIP-bigG side by side, the pooled projection and size micro-conditioning."""

from __future__ import annotations

import torch

from tui_trainer.config.enums import Family
from tui_trainer.train.families.base import NOISE_PREDICTION, SavingFacts, TrainFamily
from tui_trainer.train.loop import denoise_loss, encode_latents
from tui_trainer.train.model_parts import ModelParts


def clip_pair_conditioning(model: ModelParts, captions: list[str], device: torch.device) -> dict[str, torch.Tensor]:
    """Both encoders' penultimate hidden states side by side, and the second encoder's pooled projection.

    Written out because diffusers' encode_prompt is a pipeline method; it computes the same tensors. The size
    conditions (time_ids) come from each batch's images (loop.image_conditions)."""
    states = []
    for tokenizer, encoder in zip(model.tokenizers.values(), model.text_encoders.values(), strict=True):
        ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
        output = encoder(ids.to(device), output_hidden_states=True)
        states.append(output.hidden_states[-2])
    return {"encoder_hidden_states": torch.cat(states, dim=-1), "text_embeds": output[0]}


SDXL = TrainFamily(
    family=Family.SDXL,
    objective=NOISE_PREDICTION,
    conditioning=clip_pair_conditioning,
    loss=denoise_loss,
    encode=encode_latents,
    saving=SavingFacts(
        "sdxl_base_v1-0", "stable-diffusion-xl-v1-base",
        kohya_prefixes={"unet": "lora_unet", "text_encoder": "lora_te1", "text_encoder_2": "lora_te2"},
    ),
    single_file_pipeline="StableDiffusionXLPipeline",
)

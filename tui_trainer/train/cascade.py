"""Stable Cascade stage C's training step: CLIP conditioning, Wuerstchen cosine noise, epsilon target, P2 weights.

Stage C denoises EfficientNet features (train/effnet.py) at a continuous noise level t in [0, 1]; diffusers'
DDPMWuerstchenScheduler holds the cosine schedule. The loss is weighted per sample by P2 (Choi et al. 2022,
k = 1, gamma = 1: 1 / (1 + SNR)), which replaces min-SNR weighting here (training.min_snr_gamma is not used).
"""

from __future__ import annotations

from typing import Any

import torch

from tui_trainer.config.schema import TrainingConfig
from tui_trainer.train.loading import ModelParts
from tui_trainer.train.loop import LOSSES


def clip_cascade_conditioning(model: ModelParts, captions: list[str], device: torch.device) -> dict[str, torch.Tensor]:
    """The CLIP encoder's last hidden state and its pooled projection as (B, 1, C), as StableCascadePriorPipeline
    encodes prompts."""
    tokenizer = model.tokenizers["tokenizer"]
    tokens = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt")
    output = model.text_encoders["text_encoder"](
        tokens.input_ids.to(device), attention_mask=tokens.attention_mask.to(device), output_hidden_states=True,
    )
    return {"clip_text": output.hidden_states[-1], "clip_text_pooled": output.text_embeds.unsqueeze(1)}


def encode_features(effnet: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Pixels in [-1, 1] -> stage C latents (EfficientNet features; they are used unscaled)."""
    with torch.no_grad():
        return effnet(pixels.to(effnet.device, effnet.dtype)).float()


def p2_weight(alpha_cumprod: torch.Tensor) -> torch.Tensor:
    """P2 loss weight 1 / (1 + SNR), SNR = alpha_cumprod / (1 - alpha_cumprod)."""
    return 1 - alpha_cumprod


def cascade_loss(
    model: ModelParts, latents: torch.Tensor, conditioning: dict[str, torch.Tensor], training: TrainingConfig,
    generator: torch.Generator, input_dtype: torch.dtype, autocast: Any,
    extra_channels: torch.Tensor | None = None, weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """One prior pass on noised features at uniform t in [0, 1]; P2-weighted loss against the noise."""
    scheduler, batch = model.noise_scheduler, latents.shape[0]
    noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    if training.offset_noise:
        offset = torch.randn((batch, latents.shape[1], 1, 1), generator=generator, device=latents.device, dtype=latents.dtype)
        noise = noise + training.offset_noise * offset
    t = torch.rand((batch,), generator=generator, device=latents.device, dtype=latents.dtype)
    noisy = scheduler.add_noise(latents, noise, t)
    # The scheduler has no public accessor for its cosine schedule's alpha_cumprod at a continuous t.
    alpha_cumprod = scheduler._alpha_cumprod(t, latents.device)
    prior = model.unet
    image = torch.zeros((batch, 1, prior.config.clip_image_in_channels), device=latents.device, dtype=input_dtype)
    with autocast():
        prediction = prior(
            noisy.to(input_dtype), timestep_ratio=t.to(input_dtype), clip_text_pooled=conditioning["clip_text_pooled"].to(input_dtype),
            clip_text=conditioning["clip_text"].to(input_dtype), clip_img=image, return_dict=False,
        )[0]
    element = LOSSES[training.loss](prediction.float(), noise.float(), training.huber_delta)
    if weights is not None:
        element = element * weights
    per_sample = element.mean(dim=tuple(range(1, element.ndim)))
    return (per_sample * p2_weight(alpha_cumprod)).mean()

"""Stable Diffusion 1.x: one CLIP-L text encoder, UNet, VAE; noise prediction."""

from __future__ import annotations

from tui_trainer.config.enums import Family
from tui_trainer.train.families.base import NO_SAFETY_CHECKER, NOISE_PREDICTION, SavingFacts, TrainFamily, clip_conditioning
from tui_trainer.train.loop import denoise_loss, encode_latents

SD15 = TrainFamily(
    family=Family.SD15,
    objective=NOISE_PREDICTION,
    conditioning=clip_conditioning,
    loss=denoise_loss,
    encode=encode_latents,
    saving=SavingFacts("sd_v1", "stable-diffusion-v1", kohya_prefixes={"unet": "lora_unet", "text_encoder": "lora_te"}),
    single_file_pipeline="StableDiffusionPipeline",
    pipeline_extras=NO_SAFETY_CHECKER,
)

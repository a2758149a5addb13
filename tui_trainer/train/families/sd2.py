"""Stable Diffusion 2.x: one OpenCLIP-H text encoder, UNet, VAE; v-prediction (the 768 model; a base whose scheduler
says epsilon trains epsilon)."""

from __future__ import annotations

from tui_trainer.config.enums import Family
from tui_trainer.train.families.base import NO_SAFETY_CHECKER, V_PREDICTION, SavingFacts, TrainFamily, clip_conditioning
from tui_trainer.train.loop import denoise_loss, encode_latents

SD2 = TrainFamily(
    family=Family.SD2,
    objective=V_PREDICTION,
    conditioning=clip_conditioning,
    loss=denoise_loss,
    encode=encode_latents,
    saving=SavingFacts(
        "sd_v2", "stable-diffusion-v2-768-v", kohya_prefixes={"unet": "lora_unet", "text_encoder": "lora_te"}, kohya_v2=True,
    ),
    single_file_pipeline="StableDiffusionPipeline",
    pipeline_extras=NO_SAFETY_CHECKER,
)

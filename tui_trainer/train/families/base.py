"""What one model family gives the trainer (TrainFamily), its training objectives, and the pieces families share.

A family module (sd15.py, sdxl.py, ...) defines one TrainFamily; families/__init__.py lists them. The
torch-free facts of a family (parameter counts, parts and roles, resolutions) are in models/families.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from tui_trainer.config.enums import Family, PredictionType
from tui_trainer.config.schema import TrainConfig
from tui_trainer.train.model_parts import ModelParts

Conditioning = Callable[[ModelParts, list[str], torch.device], dict[str, torch.Tensor]]
"""(model, captions, device) -> the denoiser's conditioning tensors."""
StepLoss = Callable[..., torch.Tensor]
"""(model, latents, conditioning, training config, generator, input dtype, autocast, extra channels, weights) -> loss;
loop.denoise_loss is the UNet families' one."""
Encode = Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]
"""(autoencoder, pixels in [-1, 1]) -> latents. The trainer hands over pixels already on the autoencoder's device
and dtype (loop.placed_encoder, resolved once at set-up): an Encode need not look them up each step."""
LoadAutoencoder = Callable[[Any, TrainConfig, "str | Path | None", torch.dtype], torch.nn.Module]
"""(pipeline, config, config path, dtype) -> the module that turns pixels into latents."""
SampleText = Callable[[ModelParts, str, str, torch.device, dict[str, Any]], dict[str, Any]]
"""(model, prompt, negative prompt, device, the family's sample call arguments) -> the sampling call's prompt-embedding
arguments, made by the pipeline's own encode_prompt as its call would make them."""
SampleDecoder = Callable[[TrainConfig, torch.device, torch.dtype], contextlib.AbstractContextManager[Any]]
"""(config, device, dtype) -> a context giving the pipeline that turns the sampling pipeline's output into images."""


class Objective(Protocol):
    """What the denoiser learns to predict and how training noise is drawn."""

    name: str
    """What it is, in words: 'noise prediction (DDPM)', 'v-prediction (DDPM)', ..."""
    prediction_type: PredictionType
    """The target when neither the config nor the base model's scheduler names one."""

    def noise_scheduler(self, scheduler: Any, config: TrainConfig) -> tuple[Any, str]:
        """(the base model's scheduler, config) -> (the training noise scheduler, the prediction type trained)."""


@dataclass(frozen=True)
class DiscreteDiffusion:
    """DDPM training: the base model's own betas, uniform integer timesteps, target by prediction type.

    The prediction type is the config's model.prediction_type, else the base model scheduler's, else this one's."""

    name: str
    prediction_type: PredictionType

    def noise_scheduler(self, scheduler: Any, config: TrainConfig) -> tuple[Any, str]:
        """A DDPMScheduler with the model's betas (zero-terminal-SNR rescaled when configured) and the prediction type."""
        from diffusers import DDPMScheduler

        scheduler_config = dict(scheduler.config)
        prediction = config.model.prediction_type or scheduler_config.get("prediction_type") or self.prediction_type
        prediction = str(getattr(prediction, "value", prediction))
        noise_scheduler = DDPMScheduler.from_config(
            scheduler_config, prediction_type=prediction, rescale_betas_zero_snr=config.model.zero_terminal_snr
        )
        return noise_scheduler, prediction


NOISE_PREDICTION = DiscreteDiffusion("noise prediction (DDPM)", PredictionType.EPSILON)
V_PREDICTION = DiscreteDiffusion("v-prediction (DDPM)", PredictionType.V_PREDICTION)


@dataclass(frozen=True)
class SavingFacts:
    """What the output files say about the family."""

    base_model_version: str
    """kohya's ss_base_model_version."""
    modelspec_architecture: str
    """modelspec.architecture (the SAI model spec ComfyUI and A1111 read), before '/lora'."""
    kohya_prefixes: Mapping[str, str] = field(default_factory=dict)
    """kohya LoRA key prefix per part (lora_unet, lora_te, ...); empty = no kohya layout here (LoRAs are diffusers)."""
    kohya_v2: bool = False
    """kohya's ss_v2 (an SD 2.x base)."""


def pipeline_vae(pipeline: Any, config: TrainConfig, config_path: str | Path | None, dtype: torch.dtype) -> torch.nn.Module:
    """The pipeline's own VAE."""
    return pipeline.vae


def no_sampling_problem(config: TrainConfig) -> str | None:
    """Samples can always be made."""
    return None


@dataclass(frozen=True)
class TrainFamily:
    """Everything the trainer needs for one family: loading, conditioning, objective, step, sampling and saving."""

    family: Family
    objective: Objective
    conditioning: Conditioning
    loss: StepLoss
    encode: Encode
    saving: SavingFacts
    single_file_pipeline: str = ""
    """diffusers pipeline class that reads the family's original (A1111 / ComfyUI) single-file checkpoint; "" = none."""
    pipeline_extras: Mapping[str, Any] = field(default_factory=dict)
    """Pipeline components a trainer never needs, left unloaded (and passed when building pipelines)."""
    pipeline_names: Mapping[str, str | None] = field(default_factory=dict)
    """Pipeline component name of a trainer part where it differs (unet -> transformer / prior; None = not one)."""
    autoencoder: LoadAutoencoder = pipeline_vae
    sample_inputs: Callable[[tuple[int, int]], dict[str, Any]] = lambda size: {}
    """(width, height) -> extra arguments of the sampling pipeline's call."""
    sampling_problem: Callable[[TrainConfig], str | None] = no_sampling_problem
    """Why samples cannot be made with this config (None when they can)."""
    sample_decoder: SampleDecoder | None = None
    """Turns the sampling pipeline's output into images (Stable Cascade's stages B and A); None = it gives images."""
    samples_with_own_scheduler: bool = False
    """Samples use the base model's own scheduler (flow matching: FlowMatchEulerDiscrete); sample.sampler does not apply."""
    cfg_argument: str = "guidance_scale"
    """The sampling pipeline's call argument that takes sample.cfg (Qwen-Image: true_cfg_scale)."""
    sample_text: SampleText | None = None
    """Encodes a sample's prompts ahead, so the text encoders can be freed after caching (the family's FamilySpec says
    frees_cached_text_encoders); None = the sampling pipeline reads the prompts with the text encoders."""


def clip_conditioning(model: ModelParts, captions: list[str], device: torch.device) -> dict[str, torch.Tensor]:
    """SD1 / SD2: the text encoder's last hidden state as the UNet's cross-attention input."""
    tokenizer = model.tokenizers["tokenizer"]
    ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
    return {"encoder_hidden_states": model.text_encoders["text_encoder"](ids.to(device))[0]}


NO_SAFETY_CHECKER = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
"""Stable Diffusion 1 / 2 pipelines' components a trainer leaves out."""

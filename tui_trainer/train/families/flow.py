"""Rectified-flow training, shared by the flow-matching families (FLUX.1, Chroma).

The transformer learns the velocity noise - latents at a noise level sigma in (0, 1), with the noised input
(1 - sigma) x latents + sigma x noise; latents go in packed 2 x 2 into tokens with their position ids, as in
diffusers' FLUX training examples. Noise levels are drawn from the run's noise generator (so a resumed run
draws the same ones), then shifted as the base model's scheduler shifts them when sampling.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from tui_trainer.config.enums import PredictionType, TimestepSampling
from tui_trainer.config.schema import FlowConfig, TrainConfig, TrainingConfig
from tui_trainer.train.loop import diffusion_loss, draw_noise
from tui_trainer.train.model_parts import ModelParts

LEVEL_DRAWS: dict[TimestepSampling, Callable[[FlowConfig, int, torch.Generator, torch.device], torch.Tensor]] = {
    TimestepSampling.UNIFORM: lambda flow, n, rng, device: torch.rand(n, generator=rng, device=device),
    TimestepSampling.LOGIT_NORMAL: lambda flow, n, rng, device: torch.sigmoid(
        flow.logit_mean + flow.logit_std * torch.randn(n, generator=rng, device=device)),
    TimestepSampling.SIGMOID: lambda flow, n, rng, device: torch.sigmoid(
        flow.sigmoid_scale * torch.randn(n, generator=rng, device=device)),
}
"""Unshifted noise levels in (0, 1) per sampling scheme. Written here rather than with diffusers'
compute_density_for_timestep_sampling, which draws from the global RNG (and takes seconds to import)."""

EDGE = 1e-5
"""Noise levels stay this far from 0 and 1 (the shift divides by the level)."""


@dataclass(frozen=True)
class FlowSchedule:
    """A flow family's training noise schedule (what ModelParts.noise_scheduler holds for it)."""

    settings: FlowConfig
    scheduler: Any
    """The base model's FlowMatchEulerDiscreteScheduler: its shift settings."""
    max_sequence_length: int
    """T5 tokens per caption."""

    def shift(self, levels: torch.Tensor, image_tokens: int) -> torch.Tensor:
        """Shifted noise levels: flow.shift when set, else the scheduler's (resolution-dependent when it has dynamic shifting)."""
        config = self.scheduler.config
        if self.settings.shift is None and config.get("use_dynamic_shifting"):
            from diffusers.pipelines.flux.pipeline_flux import calculate_shift

            mu = calculate_shift(image_tokens, config.base_image_seq_len, config.max_image_seq_len, config.base_shift, config.max_shift)
            return self.scheduler.time_shift(mu, 1.0, levels)
        shift = self.settings.shift if self.settings.shift is not None else config.get("shift", 1.0)
        return shift * levels / (1 + (shift - 1) * levels)

    def sigmas(self, batch: int, image_tokens: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        """One shifted noise level per sample."""
        levels = LEVEL_DRAWS[self.settings.timestep_sampling](self.settings, batch, generator, device)
        return self.shift(levels.clamp(EDGE, 1 - EDGE), image_tokens)


@dataclass(frozen=True)
class RectifiedFlow:
    """The flow-matching objective: velocity target, shifted noise levels."""

    name: str
    sequence_length: int
    """T5 tokens per caption when flow.max_sequence_length is unset."""
    prediction_type: PredictionType = PredictionType.FLOW

    def noise_scheduler(self, scheduler: Any, config: TrainConfig) -> tuple[FlowSchedule, str]:
        """The run's FlowSchedule around the base model's scheduler."""
        length = config.flow.max_sequence_length or self.sequence_length
        return FlowSchedule(config.flow, scheduler, length), self.prediction_type.value


def pack(latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, channels, h, w) latents -> 2 x 2 patch tokens and their position ids (diffusers' FluxPipeline helpers)."""
    from diffusers import FluxPipeline

    batch, channels, height, width = latents.shape
    tokens = FluxPipeline._pack_latents(latents, batch, channels, height, width)
    ids = FluxPipeline._prepare_latent_image_ids(batch, height // 2, width // 2, latents.device, latents.dtype)
    return tokens, ids


def unpack(tokens: torch.Tensor, latent_shape: torch.Size) -> torch.Tensor:
    """Patch tokens back to (batch, channels, h, w) latents."""
    from diffusers import FluxPipeline

    height, width = latent_shape[-2:]
    return FluxPipeline._unpack_latents(tokens, height * 8, width * 8, 8)


def image_tokens(latents: torch.Tensor) -> int:
    """Tokens a latent of this shape packs into."""
    return (latents.shape[-2] // 2) * (latents.shape[-1] // 2)


def flow_loss(
    model: ModelParts, latents: torch.Tensor, text_inputs: dict[str, torch.Tensor | None], training: TrainingConfig,
    generator: torch.Generator, input_dtype: torch.dtype, autocast: Any, weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """One transformer pass on noised, packed latents and its loss against the velocity (noise - latents).

    `text_inputs` are the transformer's text arguments (encoder_hidden_states and the family's extras)."""
    schedule: FlowSchedule = model.noise_scheduler
    noise = draw_noise(latents, training, generator)
    sigmas = schedule.sigmas(latents.shape[0], image_tokens(latents), generator, latents.device)
    level = sigmas.view(-1, *[1] * (latents.ndim - 1))
    tokens, image_ids = pack(((1 - level) * latents + level * noise).to(input_dtype))
    text_ids = torch.zeros(text_inputs["encoder_hidden_states"].shape[1], 3, device=latents.device, dtype=input_dtype)
    with autocast():
        prediction = model.unet(
            hidden_states=tokens, timestep=sigmas.to(input_dtype), img_ids=image_ids, txt_ids=text_ids, return_dict=False,
            **text_inputs,
        )[0]
    return diffusion_loss(unpack(prediction, latents.shape), noise - latents, sigmas, None, PredictionType.FLOW.value, training, weights)


def text_pipeline(pipeline_class: type, model: ModelParts) -> Any:
    """The family's pipeline with only its text encoders and tokenizers, for its own encode_prompt."""
    return pipeline_class(scheduler=None, vae=None, transformer=None, **model.text_encoders, **model.tokenizers)


def sample_length(pipeline_class: type, inputs: dict[str, Any]) -> int:
    """The text length a sampling call reads: the family's sample argument, else the pipeline call's own default."""
    default = inspect.signature(pipeline_class.__call__).parameters["max_sequence_length"].default
    return inputs.get("max_sequence_length", default)

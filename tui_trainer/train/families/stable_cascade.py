"""Stable Cascade stage C: CLIP conditioning, Wuerstchen cosine noise, epsilon target, P2 weights.

Stage C denoises EfficientNet features (train/effnet.py) at a continuous noise level t in [0, 1]; diffusers'
DDPMWuerstchenScheduler holds the cosine schedule. The loss is weighted per sample by P2 (Choi et al. 2022,
k = 1, gamma = 1: 1 / (1 + SNR)), which replaces min-SNR weighting here (training.min_snr_gamma is not used).

Stage C makes image embeddings; with model.cascade_decoder set, stages B and A (loaded for the sampling only) turn
them into images. It samples with its own Wuerstchen scheduler (sample.sampler does not apply).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tui_trainer.config.enums import Family, PredictionType
from tui_trainer.config.io import resolve_path
from tui_trainer.config.schema import TrainConfig, TrainingConfig
from tui_trainer.train.errors import ModelLoadError
from tui_trainer.train.families.base import SavingFacts, TrainFamily
from tui_trainer.train.loop import LOSSES
from tui_trainer.train.model_parts import ModelParts


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
    """Pixels in [-1, 1], on the encoder's device and dtype -> stage C latents (EfficientNet features; used unscaled)."""
    with torch.no_grad():
        return effnet(pixels).float()


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


@dataclass(frozen=True)
class WuerstchenCosine:
    """Noise prediction at a continuous noise level t in [0, 1] on the cosine schedule of the model's own
    DDPMWuerstchenScheduler (drawn in cascade_loss)."""

    name: str = "noise prediction (Wuerstchen cosine schedule, continuous t, P2 weights)"
    prediction_type: PredictionType = PredictionType.EPSILON

    def noise_scheduler(self, scheduler: Any, config: TrainConfig) -> tuple[Any, str]:
        """The base model's own scheduler, noise prediction."""
        return scheduler, self.prediction_type.value


def effnet_encoder(pipeline: Any, config: TrainConfig, config_path: str | Path | None, dtype: torch.dtype) -> torch.nn.Module:
    """The EfficientNet encoder from model.effnet_encoder (else effnet_encoder.safetensors in the model folder)."""
    from tui_trainer.train.effnet import load_encoder

    default = resolve_path(config_path, config.model.base_model) / "effnet_encoder.safetensors"
    path = resolve_path(config_path, config.model.effnet_encoder) if config.model.effnet_encoder else default
    if not path.is_file():
        raise ModelLoadError(
            f"Stable Cascade needs its EfficientNet encoder and {path} is not a file; download effnet_encoder.safetensors "
            "(stabilityai/stable-cascade) and set model.effnet_encoder to it"
        )
    return load_encoder(path, dtype)


def sampling_problem(config: TrainConfig) -> str | None:
    """Stage C's output is image embeddings: images need the decoder stages."""
    if config.model.cascade_decoder:
        return None
    return ("stage C makes image embeddings; its images need the stage B and A decoders: set model.cascade_decoder "
            "(e.g. stabilityai/stable-cascade)")


@contextlib.contextmanager
def stage_decoder(config: TrainConfig, device: torch.device, dtype: torch.dtype) -> Iterator[Any]:
    """The stage B + A pipeline from model.cascade_decoder on `device`, off the device afterwards. Assembled from its
    components: diffusers cannot find PaellaVQModel by the name in model_index.json."""
    from diffusers import DDPMWuerstchenScheduler, StableCascadeDecoderPipeline, StableCascadeUNet
    from diffusers.pipelines.deprecated.wuerstchen import PaellaVQModel
    from transformers import AutoTokenizer, CLIPTextModelWithProjection

    source = config.model.cascade_decoder
    decoder = StableCascadeDecoderPipeline(
        decoder=StableCascadeUNet.from_pretrained(source, subfolder="decoder", torch_dtype=dtype),
        text_encoder=CLIPTextModelWithProjection.from_pretrained(source, subfolder="text_encoder", torch_dtype=dtype),
        tokenizer=AutoTokenizer.from_pretrained(source, subfolder="tokenizer"),
        scheduler=DDPMWuerstchenScheduler.from_pretrained(source, subfolder="scheduler"),
        vqgan=PaellaVQModel.from_pretrained(source, subfolder="vqgan", torch_dtype=dtype),
    ).to(device)
    decoder.set_progress_bar_config(disable=True)
    try:
        yield decoder
    finally:
        decoder.to("cpu")


STABLE_CASCADE = TrainFamily(
    family=Family.STABLE_CASCADE,
    objective=WuerstchenCosine(),
    conditioning=clip_cascade_conditioning,
    loss=cascade_loss,
    encode=encode_features,
    saving=SavingFacts("stable_cascade", "stable-cascade-v1-prior"),
    pipeline_extras={"image_encoder": None, "feature_extractor": None},
    pipeline_names={"unet": "prior", "vae": None},
    autoencoder=effnet_encoder,
    sampling_problem=sampling_problem,
    sample_decoder=stage_decoder,
)

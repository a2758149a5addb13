"""Sample images during training with the family's diffusers pipeline and the current trainable weights.

Sampling never moves the training RNG streams: each image has its own seeded generator, and the global RNG
states are put back afterwards. Parts are switched to eval and back, parts parked on the CPU come to the
device only for the sampling, and the pipeline is freed before training goes on.

Stable Cascade's trained stage C makes image embeddings; with model.cascade_decoder set, stages B and A (loaded for
the sampling only) turn them into images. It samples with its own Wuerstchen scheduler (sample.sampler does not apply).
"""

from __future__ import annotations

import contextlib
import gc
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import diffusers
import torch
from PIL import Image

from tui_trainer.atomic import atomic_write_bytes
from tui_trainer.config import TrainConfig, parse_resolution
from tui_trainer.config.enums import SAMPLERS, Family
from tui_trainer.config.schema import SampleConfig
from tui_trainer.train.backup import rng_state, set_rng_state
from tui_trainer.train.loading import PIPELINE_EXTRAS, ModelParts, compute_dtype


def sample_name(step: int, index: int) -> str:
    """File name of sample `index` at `step`: step-000120-0.png."""
    return f"step-{step:06d}-{index}.png"


def default_size(config: TrainConfig) -> tuple[int, int]:
    """(width, height) of a sample without its own size: the fixed training size, else the first target side."""
    sides, fixed = parse_resolution(config.training.resolution)
    return fixed or (sides[0], sides[0])


def sampler(name: str, noise_scheduler: Any) -> Any:
    """The diffusers scheduler of a sampler name, configured like the model's own scheduler."""
    return getattr(diffusers, SAMPLERS[name]).from_config(noise_scheduler.config)


@contextlib.contextmanager
def sampling_mode(modules: list[torch.nn.Module], device: torch.device) -> Iterator[None]:
    """Modules in eval mode on `device`, each put back in its mode and on its device afterwards; RNGs untouched."""
    before = [(module, module.training, next(module.parameters()).device) for module in modules]
    rngs = rng_state({})
    try:
        for module in modules:
            module.eval().to(device)
        yield
    finally:
        for module, training, place in before:
            module.train(training).to(place)
        set_rng_state(rngs, {})
        if device.type == "cuda":
            gc.collect()
            torch.cuda.empty_cache()


NO_IMAGES: dict[Family, str] = {
    Family.STABLE_CASCADE: "stage C makes image embeddings; its images need the stage B and A decoders: set model.cascade_decoder "
    "(e.g. stabilityai/stable-cascade)",
}
"""Families whose training pipeline cannot make sample images without model.cascade_decoder, and why."""

DECODER_STEPS = 10
"""Stage B's denoising steps (Stable Cascade's default; the sample's steps and cfg drive stage C)."""

EXTRA_INPUTS: dict[str, Callable[[tuple[int, int]], dict[str, Any]]] = {
    "StableDiffusionInpaintPipeline": lambda size: {
        "image": Image.new("RGB", size, (127, 127, 127)), "mask_image": Image.new("L", size, 255),
    },
    "PixArtAlphaPipeline": lambda size: {"use_resolution_binning": False, "clean_caption": False},
}
"""Pipeline class name -> extra call arguments: an inpainting model samples with the whole image masked (text to
image); PixArt samples at exactly the asked size, its prompt as written."""


def sampling_problem(config: TrainConfig) -> str | None:
    """Why samples cannot be made for the config's model (None when they can)."""
    return None if config.model.cascade_decoder else NO_IMAGES.get(config.model.family)


@contextlib.contextmanager
def stage_decoder(config: TrainConfig, device: torch.device) -> Iterator[Any]:
    """Stable Cascade's stage B + A pipeline from model.cascade_decoder on `device` (None for other families), off the
    device afterwards. Assembled from its components: diffusers cannot find PaellaVQModel by the name in model_index.json."""
    if config.model.family != Family.STABLE_CASCADE:
        yield None
        return
    from diffusers import DDPMWuerstchenScheduler, StableCascadeDecoderPipeline, StableCascadeUNet
    from diffusers.pipelines.deprecated.wuerstchen import PaellaVQModel
    from transformers import AutoTokenizer, CLIPTextModelWithProjection

    source, dtype = config.model.cascade_decoder, compute_dtype(config)
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


def build_pipeline(model: ModelParts, unwrap: Callable[[torch.nn.Module], torch.nn.Module], scheduler: Any) -> Any:
    """The family's pipeline around the live (trained) modules."""
    modules = {"vae": model.vae, "unet": unwrap(model.unet), **{name: unwrap(module) for name, module in model.text_encoders.items()}}
    components = {**model.pipeline_components(modules), **model.tokenizers, "scheduler": scheduler}
    pipeline = model.pipeline_class(**components, **PIPELINE_EXTRAS.get(model.family, {}))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def generate(
    pipeline: Any, sample: SampleConfig, size: tuple[int, int], device: torch.device, prompts: Callable[[list[str]], list[str]],
    decoder: Any = None,
) -> Any:
    """One PIL image of `sample`; `prompts` turns the prompt into what the text encoders read (the method's captions hook,
    e.g. an embedding's placeholder expanded to its vector tokens); the negative prompt is used as written. With a
    `decoder` (Stable Cascade) the pipeline's image embeddings go through it, with the prompt as written."""
    generator = torch.Generator(device=device).manual_seed(sample.seed)
    width, height = sample.width or size[0], sample.height or size[1]
    (prompt,) = prompts([sample.prompt])
    output = pipeline(
        prompt=prompt, negative_prompt=sample.negative_prompt, width=width, height=height,
        num_inference_steps=sample.steps, guidance_scale=sample.cfg, generator=generator,
        **EXTRA_INPUTS.get(type(pipeline).__name__, lambda size: {})((width, height)),
    )
    if decoder is None:
        return output.images[0]
    image = decoder(
        image_embeddings=output.image_embeddings, prompt=sample.prompt, num_inference_steps=DECODER_STEPS, guidance_scale=0.0,
        generator=generator,
    ).images[0]
    # Stage B's latent grid rounds the size (embeddings are 1/42.67 of it, stage B's latents 10.67 times those).
    return image.resize((width, height), Image.Resampling.LANCZOS)


def make_samples(
    model: ModelParts, config: TrainConfig, folder: Path, step: int, device: torch.device,
    unwrap: Callable[[torch.nn.Module], torch.nn.Module], autocast: Callable[[], Any],
    prompts: Callable[[list[str]], list[str]] = lambda texts: texts,
) -> list[Path]:
    """Write every configured sample of `step` into `folder` as PNG; returns the paths in sample order."""
    modules = [model.vae, unwrap(model.unet), *(unwrap(module) for module in model.text_encoders.values())]
    size = default_size(config)
    paths = []
    with sampling_mode(modules, device), torch.no_grad(), autocast(), stage_decoder(config, device) as decoder:
        for index, sample in enumerate(config.samples):
            noise = model.noise_scheduler
            scheduler = sampler(sample.sampler, noise) if decoder is None else type(noise).from_config(noise.config)
            pipeline = build_pipeline(model, unwrap, scheduler)
            image = generate(pipeline, sample, size, device, prompts, decoder)
            del pipeline
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            path = folder / sample_name(step, index)
            atomic_write_bytes(path, buffer.getvalue())
            paths.append(path)
    return paths

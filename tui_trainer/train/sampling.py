"""Sample images during training with the family's diffusers pipeline and the current trainable weights.

Sampling never moves the training RNG streams: each image has its own seeded generator, and the global RNG
states are put back afterwards. Parts are switched to eval and back, parts parked on the CPU come to the
device only for the sampling, and the pipeline is freed before training goes on. Where the text encoders were freed
after caching (flow families), the samples' prompts were encoded ahead by encode_sample_prompts and the pipeline gets
their embeddings.

A family whose pipeline does not make images itself (Stable Cascade's stage C) has a sample decoder that turns its
output into images; it then samples with the model's own scheduler (sample.sampler does not apply).
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
from tui_trainer.config.enums import SAMPLERS
from tui_trainer.config.schema import SampleConfig
from tui_trainer.train.backup import rng_state, set_rng_state
from tui_trainer.train.families import train_family
from tui_trainer.train.loading import compute_dtype
from tui_trainer.train.model_parts import ModelParts


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


@contextlib.contextmanager
def decoding_in_own_dtype(vae: torch.nn.Module) -> Iterator[None]:
    """The VAE's decode casts its latents to the VAE's dtype (a float32 VAE beside a bf16 transformer, no autocast).

    Pipelines hand decode the denoiser's latents as they are; an instance attribute shadows decode for the sampling
    only, since diffusers has no hook for a method other than forward."""
    decode = getattr(vae, "decode", None)
    if decode is None:
        yield
        return
    dtype = next(vae.parameters()).dtype
    vae.decode = lambda latents, *args, **kwargs: decode(latents.to(dtype), *args, **kwargs)
    try:
        yield
    finally:
        del vae.decode


DECODER_STEPS = 10
"""Stage B's denoising steps (Stable Cascade's default; the sample's steps and cfg drive stage C)."""

EXTRA_INPUTS: dict[str, Callable[[tuple[int, int]], dict[str, Any]]] = {
    "StableDiffusionInpaintPipeline": lambda size: {
        "image": Image.new("RGB", size, (127, 127, 127)), "mask_image": Image.new("L", size, 255),
    },
}
"""Pipeline class name -> extra call arguments: an inpainting model samples with the whole image masked (text to
image). The family's own extra arguments come from its sample_inputs."""


def sampling_problem(config: TrainConfig) -> str | None:
    """Why samples cannot be made for the config's model (None when they can)."""
    return train_family(config.model.family).sampling_problem(config)


def sample_decoder(config: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The family's decoder of the sampling pipeline's output on `device` (None: the pipeline makes images)."""
    decoder = train_family(config.model.family).sample_decoder
    return contextlib.nullcontext() if decoder is None else decoder(config, device, compute_dtype(config))


def build_pipeline(model: ModelParts, unwrap: Callable[[torch.nn.Module], torch.nn.Module], scheduler: Any) -> Any:
    """The family's pipeline around the live (trained) modules."""
    modules = {"vae": model.vae, "unet": unwrap(model.unet), **{name: unwrap(module) for name, module in model.text_encoders.items()}}
    components = {**model.pipeline_components(modules), **model.tokenizers, "scheduler": scheduler}
    pipeline = model.pipeline_class(**components, **train_family(model.family).pipeline_extras)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def sample_size(sample: SampleConfig, size: tuple[int, int]) -> tuple[int, int]:
    """(width, height) of `sample`, `size` where it sets none."""
    return sample.width or size[0], sample.height or size[1]


def prompt_inputs(sample: SampleConfig, prompts: Callable[[list[str]], list[str]]) -> dict[str, Any]:
    """The sampling call's prompt arguments: the prompt as `prompts` turns it into what the text encoders read (the
    method's captions hook, e.g. an embedding's placeholder expanded to its vector tokens), the negative one as written."""
    (prompt,) = prompts([sample.prompt])
    return {"prompt": prompt, "negative_prompt": sample.negative_prompt}


def generate(
    pipeline: Any, sample: SampleConfig, size: tuple[int, int], device: torch.device, text: dict[str, Any],
    decoder: Any = None, family_inputs: Callable[[tuple[int, int]], dict[str, Any]] = lambda size: {},
    cfg_argument: str = "guidance_scale",
) -> Any:
    """One PIL image of `sample`; `text` are the call's prompt arguments (prompt_inputs, or prompt embeddings made ahead
    by the family's sample_text); `family_inputs` are the family's extra call arguments, `cfg_argument` the call argument
    sample.cfg goes to (unset: the pipeline's own default). With a `decoder` (Stable Cascade) the pipeline's image
    embeddings go through it, with the prompt as written."""
    generator = torch.Generator(device=device).manual_seed(sample.seed)
    width, height = sample_size(sample, size)
    output = pipeline(
        **text, width=width, height=height,
        num_inference_steps=sample.steps, generator=generator, **({} if sample.cfg is None else {cfg_argument: sample.cfg}),
        **EXTRA_INPUTS.get(type(pipeline).__name__, lambda size: {})((width, height)), **family_inputs((width, height)),
    )
    if decoder is None:
        return output.images[0]
    image = decoder(
        image_embeddings=output.image_embeddings, prompt=sample.prompt, num_inference_steps=DECODER_STEPS, guidance_scale=0.0,
        generator=generator,
    ).images[0]
    # Stage B's latent grid rounds the size (embeddings are 1/42.67 of it, stage B's latents 10.67 times those).
    return image.resize((width, height), Image.Resampling.LANCZOS)


def encode_sample_prompts(
    model: ModelParts, config: TrainConfig, device: torch.device, autocast: Callable[[], Any],
    prompts: Callable[[list[str]], list[str]] = lambda texts: texts,
) -> list[dict[str, Any]]:
    """Every configured sample's prompt arguments, encoded now by the family's sample_text with the text encoders on
    `device` (they can be freed afterwards); kept on the CPU until a sampling needs them."""
    family, size = train_family(model.family), default_size(config)
    texts = []
    with torch.no_grad(), autocast():
        for sample in config.samples:
            (prompt,) = prompts([sample.prompt])
            encoded = family.sample_text(model, prompt, sample.negative_prompt, device, family.sample_inputs(sample_size(sample, size)))
            texts.append({name: _moved(value, torch.device("cpu")) for name, value in encoded.items()})
    return texts


def _moved(value: Any, device: torch.device) -> Any:
    """A tensor, a list of tensors (Z-Image's per-prompt embeddings) or None, on `device`."""
    if isinstance(value, list):
        return [_moved(item, device) for item in value]
    return value.to(device) if isinstance(value, torch.Tensor) else value


def make_samples(
    model: ModelParts, config: TrainConfig, folder: Path, step: int, device: torch.device,
    unwrap: Callable[[torch.nn.Module], torch.nn.Module], autocast: Callable[[], Any],
    prompts: Callable[[list[str]], list[str]] = lambda texts: texts, texts: list[dict[str, Any]] | None = None,
) -> list[Path]:
    """Write every configured sample of `step` into `folder` as PNG; returns the paths in sample order. `texts` are the
    samples' prompt arguments made ahead (encode_sample_prompts); without them the pipeline encodes the prompts."""
    modules = [model.vae, unwrap(model.unet), *(unwrap(module) for module in model.text_encoders.values())]
    size = default_size(config)
    paths = []
    with (sampling_mode(modules, device), decoding_in_own_dtype(model.vae), torch.no_grad(), autocast(),
          sample_decoder(config, device) as decoder):
        family = train_family(model.family)
        for index, sample in enumerate(config.samples):
            if decoder is None and not family.samples_with_own_scheduler:
                scheduler = sampler(sample.sampler, model.noise_scheduler)
            else:
                base = model.scheduler if family.samples_with_own_scheduler else model.noise_scheduler
                scheduler = type(base).from_config(base.config)
            pipeline = build_pipeline(model, unwrap, scheduler)
            text = prompt_inputs(sample, prompts) if texts is None else {name: _moved(value, device) for name, value in texts[index].items()}
            image = generate(pipeline, sample, size, device, text, decoder, family.sample_inputs, family.cfg_argument)
            del pipeline
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            path = folder / sample_name(step, index)
            atomic_write_bytes(path, buffer.getvalue())
            paths.append(path)
    return paths

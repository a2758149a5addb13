"""Load the base model from a Hugging Face repo id, a local diffusers folder or a single-file checkpoint."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tui_trainer.config.enums import Family, TrainDtype, WeightDtype
from tui_trainer.config.io import resolve_path
from tui_trainer.config.schema import TrainConfig
from tui_trainer.models.families import family_spec

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
SAFE_SUFFIXES = (".safetensors", ".sft")
TEXT_ENCODER_PARTS = ("text_encoder", "text_encoder_2")

SINGLE_FILE_PIPELINES: dict[Family, str] = {
    Family.SD15: "StableDiffusionPipeline",
    Family.SD2: "StableDiffusionPipeline",
    Family.SDXL: "StableDiffusionXLPipeline",
}
"""diffusers pipeline class that reads each family's original single-file layout."""

NO_SAFETY_CHECKER = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
PIPELINE_EXTRAS: dict[Family, dict[str, Any]] = {
    Family.SD15: NO_SAFETY_CHECKER, Family.SD2: NO_SAFETY_CHECKER,
    Family.STABLE_CASCADE: {"image_encoder": None, "feature_extractor": None},
}
"""Components a trainer never needs, left unloaded."""

STORAGE_DTYPES: dict[WeightDtype, torch.dtype | None] = {
    WeightDtype.FLOAT32: torch.float32,
    WeightDtype.FLOAT16: torch.float16,
    WeightDtype.BFLOAT16: torch.bfloat16,
    WeightDtype.FLOAT8: getattr(torch, "float8_e4m3fn", None),
    WeightDtype.NF4: None,
}
"""Storage dtype per configured weight dtype (nf4 is bitsandbytes' packed format, not a torch dtype)."""

CPU_STORAGE: dict[torch.dtype, torch.dtype] = {torch.float16: torch.bfloat16}
"""Storage dtypes swapped without CUDA: CPU kernels (group_norm) reject float16 weights beside bfloat16 autocast."""

COMPUTE_DTYPES: dict[TrainDtype, torch.dtype] = {
    TrainDtype.FLOAT32: torch.float32,
    TrainDtype.TF32: torch.float32,
    TrainDtype.FLOAT16: torch.float16,
    TrainDtype.BFLOAT16: torch.bfloat16,
}


class ModelLoadError(Exception):
    """The base model cannot be loaded; the message says why and what to do."""


@dataclass
class ModelParts:
    """The loaded pieces of a diffusion model the trainer works with."""

    family: Family
    pipeline_class: type
    unet: torch.nn.Module
    vae: torch.nn.Module
    noise_scheduler: Any
    prediction_type: str
    text_encoders: dict[str, torch.nn.Module] = field(default_factory=dict)
    tokenizers: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    scheduler: Any = None
    """The base model's own sampling scheduler (saved with full models)."""
    pipeline_names: dict[str, str | None] = field(default_factory=dict)
    """Pipeline component name of a part where it differs (unet -> transformer / prior; None = not a component)."""

    def pipeline_components(self, modules: dict[str, torch.nn.Module]) -> dict[str, torch.nn.Module]:
        """Parts by trainer name -> the pipeline constructor's keyword arguments."""
        named = {self.pipeline_names.get(name, name): module for name, module in modules.items()}
        return {name: module for name, module in named.items() if name is not None}

    def part(self, name: str) -> torch.nn.Module:
        """A model part by name: unet, vae, text_encoder or text_encoder_2."""
        return self.text_encoders[name] if name in TEXT_ENCODER_PARTS else getattr(self, name)


def pickle_refusal(path: str | Path) -> str:
    """The message of a refused pickle checkpoint."""
    return (
        f"{path}: pickle checkpoints (.ckpt/.pt/.pth/.bin) can run code when loaded; convert it to .safetensors, "
        "or set model.allow_pickle = true if you trust the file"
    )


def hub_hint(repo_id: str, error: BaseException) -> str:
    """The message of a hub id that cannot be fetched."""
    return (
        f"cannot load {repo_id!r} from the Hugging Face Hub ({type(error).__name__}: {error}). "
        f"Download it where there is network (`hf download {repo_id}`) and either set model.base_model to the "
        "downloaded folder, or copy the Hugging Face cache (~/.cache/huggingface) here and set HF_HUB_OFFLINE=1"
    )


def _part_dtypes(config: TrainConfig) -> dict[str, WeightDtype]:
    model = config.model
    return {family_spec(model.family).denoiser.name: model.unet_dtype, "vae": model.vae_dtype, "text_encoder": model.text_encoder_dtype,
            "text_encoder_2": model.text_encoder_dtype}


def _load_dtype(weight: WeightDtype, compute: torch.dtype) -> torch.dtype:
    """The dtype a part is loaded in: its storage dtype, or the compute dtype for fp8 / nf4 (converted after)."""
    storage = STORAGE_DTYPES[weight]
    if weight is WeightDtype.FLOAT8 and storage is None:
        raise ModelLoadError("float8 weights need torch >= 2.1 (torch.float8_e4m3fn)")
    if weight in (WeightDtype.FLOAT8, WeightDtype.NF4):
        return compute
    return CPU_STORAGE.get(storage, storage) if not torch.cuda.is_available() else storage


def _quantization(dtypes: dict[str, WeightDtype], compute: torch.dtype) -> Any:
    nf4_parts = [part for part, weight in dtypes.items() if weight is WeightDtype.NF4]
    if not nf4_parts:
        return None
    if not torch.cuda.is_available():
        raise ModelLoadError(f"nf4 weights ({', '.join(nf4_parts)}) need a CUDA GPU (bitsandbytes 4-bit); use float8 or bfloat16 here")
    from diffusers import PipelineQuantizationConfig

    kwargs = {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": compute}
    return PipelineQuantizationConfig(quant_backend="bitsandbytes_4bit", quant_kwargs=kwargs, components_to_quantize=nf4_parts)


def _apply_fp8(pipeline: Any, dtypes: dict[str, WeightDtype], compute: torch.dtype) -> None:
    """Store fp8 parts' weights in float8 and upcast each layer for its forward (diffusers' layerwise casting)."""
    from diffusers.hooks import apply_layerwise_casting

    for part, weight in dtypes.items():
        module = getattr(pipeline, part, None)
        if weight is WeightDtype.FLOAT8 and module is not None:
            apply_layerwise_casting(module, storage_dtype=STORAGE_DTYPES[weight], compute_dtype=compute)


def _load_pipeline(config: TrainConfig, config_path: str | Path | None, compute: torch.dtype) -> tuple[Any, str]:
    import diffusers

    value = config.model.base_model
    family = config.model.family
    dtypes = _part_dtypes(config)
    torch_dtype = {part: _load_dtype(weight, compute) for part, weight in dtypes.items()} | {"default": torch.float32}
    extras = PIPELINE_EXTRAS.get(family, {})
    local = resolve_path(config_path, value)
    if local.suffix.lower() in PICKLE_SUFFIXES and not config.model.allow_pickle:
        raise ModelLoadError(pickle_refusal(value))
    if local.is_file():
        if local.suffix.lower() not in SAFE_SUFFIXES + PICKLE_SUFFIXES:
            raise ModelLoadError(f"{value}: not a checkpoint; use a .safetensors file or a diffusers folder")
        if _quantization(dtypes, compute) is not None:
            raise ModelLoadError("nf4 weights need a diffusers folder or repo id, not a single file")
        pipeline_class = getattr(diffusers, SINGLE_FILE_PIPELINES[family])
        # Pickle files reach this only with allow_pickle; diffusers reads them with torch.load(weights_only=True).
        pipeline = pipeline_class.from_single_file(str(local), dtype=torch_dtype["unet"], **extras)
        for part, dtype in torch_dtype.items():
            module = getattr(pipeline, part, None)
            if part != "default" and module is not None:
                module.to(dtype)
        return pipeline, str(local)
    kwargs = {"dtype": torch_dtype, "quantization_config": _quantization(dtypes, compute), **extras}
    if local.is_dir():
        if not (local / "model_index.json").is_file():
            raise ModelLoadError(f"{value}: folder has no model_index.json; it is not a diffusers model folder")
        return diffusers.DiffusionPipeline.from_pretrained(str(local), **kwargs), str(local)
    if value.startswith((".", "/", "~")) or local.suffix.lower() in SAFE_SUFFIXES + PICKLE_SUFFIXES:
        raise ModelLoadError(f"{value}: does not exist")
    try:
        return diffusers.DiffusionPipeline.from_pretrained(value, local_files_only=True, **kwargs), value
    except (OSError, ValueError) as cached_error:
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
            raise ModelLoadError(hub_hint(value, cached_error)) from None
    try:
        return diffusers.DiffusionPipeline.from_pretrained(value, **kwargs), value
    except Exception as error:  # network failures surface as many types (OSError, requests, hub errors)
        raise ModelLoadError(hub_hint(value, error)) from None


def _load_vae(value: str, config_path: str | Path | None, dtype: torch.dtype) -> torch.nn.Module:
    from diffusers import AutoencoderKL

    local = resolve_path(config_path, value)
    if local.is_file():
        if local.suffix.lower() not in SAFE_SUFFIXES:
            raise ModelLoadError(f"model.vae {value}: use a .safetensors file or a diffusers folder")
        return AutoencoderKL.from_single_file(str(local), dtype=dtype)
    subfolder = "vae" if (local / "vae" / "config.json").is_file() else None
    source = str(local) if local.is_dir() else value
    try:
        return AutoencoderKL.from_pretrained(source, subfolder=subfolder, dtype=dtype, local_files_only=local.is_dir())
    except OSError as error:
        raise ModelLoadError(hub_hint(value, error)) from None


def input_dtype(weight: WeightDtype, compute: torch.dtype) -> torch.dtype:
    """The dtype a part's inputs are cast to: its storage dtype, or the compute dtype for fp8 / nf4 parts."""
    return _load_dtype(weight, compute)


def compute_dtype(config: TrainConfig) -> torch.dtype:
    """The dtype forward passes run in."""
    return COMPUTE_DTYPES[config.model.train_dtype]


def ddpm_noise_scheduler(scheduler: Any, config: TrainConfig) -> tuple[Any, str]:
    """A DDPM training scheduler with the model's own betas, and the prediction type (config, else the model's)."""
    from diffusers import DDPMScheduler

    scheduler_config = dict(scheduler.config)
    prediction_type = (config.model.prediction_type or scheduler_config.get("prediction_type") or "epsilon")
    prediction_type = getattr(prediction_type, "value", prediction_type)
    noise_scheduler = DDPMScheduler.from_config(
        scheduler_config, prediction_type=prediction_type, rescale_betas_zero_snr=config.model.zero_terminal_snr
    )
    return noise_scheduler, prediction_type


def effnet_encoder(pipeline: Any, config: TrainConfig, config_path: str | Path | None, dtype: torch.dtype) -> torch.nn.Module:
    """Stable Cascade's EfficientNet encoder from model.effnet_encoder (else effnet_encoder.safetensors in the model folder)."""
    from tui_trainer.train.effnet import load_encoder

    default = resolve_path(config_path, config.model.base_model) / "effnet_encoder.safetensors"
    path = resolve_path(config_path, config.model.effnet_encoder) if config.model.effnet_encoder else default
    if not path.is_file():
        raise ModelLoadError(
            f"Stable Cascade needs its EfficientNet encoder and {path} is not a file; download effnet_encoder.safetensors "
            "(stabilityai/stable-cascade) and set model.effnet_encoder to it"
        )
    return load_encoder(path, dtype)


@dataclass(frozen=True)
class FamilyLoading:
    """How a family's pipeline becomes ModelParts."""

    autoencoder: Any = lambda pipeline, config, config_path, dtype: pipeline.vae
    """(pipeline, config, config path, dtype) -> the module that turns pixels into latents."""
    noise_scheduler: Any = ddpm_noise_scheduler
    """(the model's scheduler, config) -> (training noise scheduler, prediction type)."""
    pipeline_names: dict[str, str | None] = field(default_factory=dict)
    """ModelParts.pipeline_names."""


SD_LOADING = FamilyLoading()
FAMILY_LOADING: dict[Family, FamilyLoading] = {
    Family.PIXART_ALPHA: FamilyLoading(pipeline_names={"unet": "transformer"}),
    Family.STABLE_CASCADE: FamilyLoading(
        autoencoder=effnet_encoder, noise_scheduler=lambda scheduler, config: (scheduler, "epsilon"),
        pipeline_names={"unet": "prior", "vae": None},
    ),
}
"""Families loaded differently from SD's (VAE, DDPM noise, unet named unet)."""


def load_model(config: TrainConfig, config_path: str | Path | None = None) -> ModelParts:
    """Load the configured base model with each part in its configured storage dtype, all frozen."""
    compute = compute_dtype(config)
    family = FAMILY_LOADING.get(config.model.family, SD_LOADING)
    pipeline, source = _load_pipeline(config, config_path, compute)
    if config.model.vae:
        pipeline.vae = _load_vae(config.model.vae, config_path, _load_dtype(config.model.vae_dtype, compute))
    _apply_fp8(pipeline, _part_dtypes(config), compute)
    noise_scheduler, prediction_type = family.noise_scheduler(pipeline.scheduler, config)
    parts = ModelParts(
        family=config.model.family,
        pipeline_class=type(pipeline),
        unet=getattr(pipeline, family_spec(config.model.family).denoiser.name),
        vae=family.autoencoder(pipeline, config, config_path, _load_dtype(config.model.vae_dtype, compute)),
        noise_scheduler=noise_scheduler,
        prediction_type=prediction_type,
        text_encoders={name: getattr(pipeline, name) for name in TEXT_ENCODER_PARTS if getattr(pipeline, name, None) is not None},
        tokenizers={name: getattr(pipeline, name) for name in ("tokenizer", "tokenizer_2") if getattr(pipeline, name, None) is not None},
        source=source,
        scheduler=pipeline.scheduler,
        pipeline_names=family.pipeline_names,
    )
    for module in (parts.unet, parts.vae, *parts.text_encoders.values()):
        module.requires_grad_(False)
        module.eval()
    return parts

"""Load the base model from a Hugging Face repo id, a local diffusers folder or a single-file checkpoint."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch

from tui_trainer.config.enums import TrainDtype, WeightDtype
from tui_trainer.config.io import PICKLE_SUFFIXES, SAFE_SUFFIXES, resolve_path
from tui_trainer.config.schema import TrainConfig
from tui_trainer.models.families import family_spec
from tui_trainer.train.errors import ModelLoadError
from tui_trainer.train.families import train_family
from tui_trainer.train.model_parts import TEXT_ENCODER_PARTS, ModelParts, part_configs

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
    parts = part_configs(config)
    return {family_spec(model.family).denoiser.name: parts["unet"].dtype, "vae": model.vae_dtype,
            "text_encoder": parts["text_encoder"].dtype, "text_encoder_2": parts["text_encoder_2"].dtype}


def _load_dtype(weight: WeightDtype, compute: torch.dtype) -> torch.dtype:
    """The dtype a part is loaded in: its storage dtype, or the compute dtype for fp8 / nf4 (converted after)."""
    storage = STORAGE_DTYPES[weight]
    if weight is WeightDtype.FLOAT8 and storage is None:
        raise ModelLoadError("float8 weights need torch >= 2.1 (torch.float8_e4m3fn)")
    if weight in (WeightDtype.FLOAT8, WeightDtype.NF4):
        return compute
    return CPU_STORAGE.get(storage, storage) if not torch.cuda.is_available() else storage


def quantize_nf4(module: torch.nn.Module, compute: torch.dtype) -> int:
    """Swap every nn.Linear of `module` for a bitsandbytes nf4 Linear4bit (QLoRA storage), quantised where it is;
    returns how many were swapped. Written here because diffusers' bitsandbytes quantizer refuses to run without a
    CUDA GPU, while bitsandbytes itself quantises and computes nf4 on the CPU too."""
    import bitsandbytes as bnb

    linears = [(name, layer) for name, layer in module.named_modules() if type(layer) is torch.nn.Linear]
    for name, layer in linears:
        parent_name, _, child = name.rpartition(".")
        quantized = _nf4_linear(layer, compute, layer.weight.device)
        quantized.weight = bnb.nn.Params4bit(layer.weight.data.to(compute), requires_grad=False, quant_type="nf4")
        if layer.bias is not None:
            quantized.bias = torch.nn.Parameter(layer.bias.data.to(compute), requires_grad=False)
        module.get_submodule(parent_name).register_module(child, quantized.to(layer.weight.device))
    return len(linears)


def _weight_files(folder: Path) -> list[Path] | None:
    """A diffusers model folder's safetensors files (its shard index's, or the one file); None when it has neither."""
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    if index.is_file():
        return [folder / name for name in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    single = folder / "diffusion_pytorch_model.safetensors"
    return [single] if single.is_file() else None


def load_nf4_model(folder: Path, compute: torch.dtype) -> torch.nn.Module | None:
    """The diffusers model in `folder` with every nn.Linear in nf4, each weight quantised as it is read.

    Host RAM then holds the nf4 weights and one tensor at a time, whatever the files' dtype: loading the part whole
    first (diffusers' way without a GPU) holds all of it in the compute dtype, 24 GB for FLUX.1's transformer, unless
    the files are in that dtype already (they are read from the page cache as needed then). Written here because
    diffusers' bitsandbytes quantizer needs a CUDA GPU and loads the part onto it, while block offload keeps it in
    host RAM. None when the files' keys are not the model's own (a layout diffusers converts as it loads): the caller
    loads it whole then."""
    import diffusers
    from accelerate import init_empty_weights
    from accelerate.utils import set_module_tensor_to_device
    from safetensors import safe_open

    files = _weight_files(folder)
    if files is None:
        return None
    model_class = getattr(diffusers, json.loads((folder / "config.json").read_text())["_class_name"])
    with init_empty_weights():
        model = model_class.from_config(model_class.load_config(folder))
    linears = [(name, layer) for name, layer in model.named_modules() if type(layer) is torch.nn.Linear]
    for name, layer in linears:
        parent_name, _, child = name.rpartition(".")
        model.get_submodule(parent_name).register_module(child, _nf4_linear(layer, compute, torch.device("meta")))
    keep_fp32 = model_class._keep_in_fp32_modules or ()
    with ExitStack() as stack:
        handles = [stack.enter_context(safe_open(str(file), framework="pt")) for file in files]
        if {key for handle in handles for key in handle.keys()} != set(model.state_dict()):
            return None
        # Largest first: quantising a tensor on the CPU takes about 14 bytes a parameter for a moment (0.8 GB for
        # FLUX.1's largest), so that moment comes while little of the nf4 part is held yet.
        tensors = sorted(((handle, key) for handle in handles for key in handle.keys()),
                         key=lambda item: -math.prod(item[0].get_slice(item[1]).get_shape()))
        for handle, key in tensors:
            dtype = torch.float32 if any(part in keep_fp32 for part in key.split(".")) else compute
            set_module_tensor_to_device(model, key, "cpu", value=handle.get_tensor(key), dtype=dtype)
    return model.eval()


def _nf4_linear(layer: torch.nn.Linear, compute: torch.dtype, device: torch.device) -> torch.nn.Module:
    """An empty bitsandbytes nf4 Linear4bit shaped like `layer`, on `device`."""
    import bitsandbytes as bnb

    quantized = bnb.nn.Linear4bit(layer.in_features, layer.out_features, bias=layer.bias is not None, compute_dtype=compute,
                                  quant_type="nf4", device=device)
    # bitsandbytes repacks a layer in place for its CPU inference kernel on the first no-grad eval forward (a sample)
    # and needs widths of 64 for it; training and sampling share the layers, so they keep one layout.
    quantized.support_avx512bf16_for_cpu = False
    return quantized


def _apply_nf4(pipeline: Any, dtypes: dict[str, WeightDtype], compute: torch.dtype) -> None:
    for part, weight in dtypes.items():
        module = getattr(pipeline, part, None)
        if weight is WeightDtype.NF4 and module is not None:
            quantize_nf4(module, compute)


def _apply_fp8(pipeline: Any, dtypes: dict[str, WeightDtype], compute: torch.dtype) -> None:
    """Store fp8 parts' weights in float8 and upcast each layer for its forward (diffusers' layerwise casting)."""
    from diffusers.hooks import apply_layerwise_casting

    for part, weight in dtypes.items():
        module = getattr(pipeline, part, None)
        if weight is not WeightDtype.FLOAT8 or module is None:
            continue
        if hasattr(module, "enable_layerwise_casting"):
            # A diffusers model's own way also keeps the layers it names precision-sensitive (Z-Image's timestep and
            # caption embedders, which cast their input to their weights' dtype) in the compute dtype.
            module.enable_layerwise_casting(storage_dtype=STORAGE_DTYPES[weight], compute_dtype=compute)
        else:
            apply_layerwise_casting(module, storage_dtype=STORAGE_DTYPES[weight], compute_dtype=compute)


def _load_pipeline(config: TrainConfig, config_path: str | Path | None, compute: torch.dtype) -> tuple[Any, str]:
    import diffusers

    value = config.model.base_model
    dtypes = _part_dtypes(config)
    torch_dtype = {part: _load_dtype(weight, compute) for part, weight in dtypes.items()} | {"default": torch.float32}
    family = train_family(config.model.family)
    extras = dict(family.pipeline_extras)
    local = resolve_path(config_path, value)
    if local.suffix.lower() in PICKLE_SUFFIXES and not config.model.allow_pickle:
        raise ModelLoadError(pickle_refusal(value))
    if local.is_file():
        if local.suffix.lower() not in SAFE_SUFFIXES + PICKLE_SUFFIXES:
            raise ModelLoadError(f"{value}: not a checkpoint; use a .safetensors file or a diffusers folder")
        if not family.single_file_pipeline:
            raise ModelLoadError(f"{value}: {family.family.value} loads from a diffusers folder or repo id here, not a single file")
        pipeline_class = getattr(diffusers, family.single_file_pipeline)
        # Pickle files reach this only with allow_pickle; diffusers reads them with torch.load(weights_only=True).
        pipeline = pipeline_class.from_single_file(str(local), dtype=torch_dtype[family_spec(family.family).denoiser.name], **extras)
        for part, dtype in torch_dtype.items():
            module = getattr(pipeline, part, None)
            if part != "default" and module is not None:
                module.to(dtype)
        return pipeline, str(local)
    kwargs = {"dtype": torch_dtype, **extras}
    name = family_spec(family.family).denoiser.name
    if config.model.transformer:
        kwargs[name] = _load_single_file_denoiser(config, config_path, str(local) if local.is_dir() else value, torch_dtype[name])
    streams_nf4 = dtypes[name] is WeightDtype.NF4 and name not in kwargs
    if local.is_dir():
        if not (local / "model_index.json").is_file():
            raise ModelLoadError(f"{value}: folder has no model_index.json; it is not a diffusers model folder")
        folder = str(local)
    elif value.startswith((".", "/", "~")) or local.suffix.lower() in SAFE_SUFFIXES + PICKLE_SUFFIXES:
        raise ModelLoadError(f"{value}: does not exist")
    elif streams_nf4:
        folder = _from_hub(value, lambda offline: diffusers.DiffusionPipeline.download(value, local_files_only=offline, **extras))
    else:
        return _from_hub(value, lambda offline: diffusers.DiffusionPipeline.from_pretrained(value, local_files_only=offline, **kwargs)), value
    if streams_nf4 and (streamed := load_nf4_model(Path(folder) / name, compute)):
        kwargs[name] = streamed
    return diffusers.DiffusionPipeline.from_pretrained(folder, **kwargs), str(local) if local.is_dir() else value


def _from_hub(value: str, load: Callable[[bool], Any]) -> Any:
    """`load(offline)` for a Hugging Face repo id: from the local cache first, then from the hub unless HF_HUB_OFFLINE."""
    try:
        return load(True)
    except (OSError, ValueError) as cached_error:
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
            raise ModelLoadError(hub_hint(value, cached_error)) from None
    try:
        return load(False)
    except Exception as error:  # network failures surface as many types (OSError, requests, hub errors)
        raise ModelLoadError(hub_hint(value, error)) from None


def _load_single_file_denoiser(config: TrainConfig, config_path: str | Path | None, base: str, dtype: torch.dtype) -> torch.nn.Module:
    """model.transformer: the denoiser from one file, in the original or the diffusers layout, shaped by the base's config.

    diffusers' from_single_file converts an original-layout file (FLUX.1's BFL keys and the like) and reads a
    diffusers-layout one as it is; its class is the one the family's pipeline takes."""
    import inspect

    import diffusers

    value = config.model.transformer
    spec = family_spec(config.model.family)
    local = resolve_path(config_path, value)
    if not local.is_file() or local.suffix.lower() not in SAFE_SUFFIXES:
        raise ModelLoadError(f"model.transformer {value}: not a .safetensors file")
    pipeline_class = getattr(diffusers, spec.pipeline)
    model_class = inspect.signature(pipeline_class.__init__).parameters[spec.denoiser.name].annotation
    base_is_local = Path(base).is_dir()
    try:
        return model_class.from_single_file(
            str(local), config=base, subfolder=spec.denoiser.name, torch_dtype=dtype, local_files_only=base_is_local,
        )
    except OSError as error:
        raise ModelLoadError(f"model.transformer {value}: its config comes from model.base_model: {hub_hint(base, error)}") from None
    except (ValueError, KeyError, IndexError, RuntimeError) as error:
        raise ModelLoadError(
            f"model.transformer {value}: not a {spec.label} transformer that fits {base}'s config ({type(error).__name__}: {error})"
        ) from None


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


def load_model(config: TrainConfig, config_path: str | Path | None = None) -> ModelParts:
    """Load the configured base model with each part in its configured storage dtype, all frozen."""
    compute = compute_dtype(config)
    family = train_family(config.model.family)
    pipeline, source = _load_pipeline(config, config_path, compute)
    if config.model.vae:
        pipeline.vae = _load_vae(config.model.vae, config_path, _load_dtype(config.model.vae_dtype, compute))
    _apply_fp8(pipeline, _part_dtypes(config), compute)
    _apply_nf4(pipeline, _part_dtypes(config), compute)
    noise_scheduler, prediction_type = family.objective.noise_scheduler(pipeline.scheduler, config)
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
        pipeline_names=dict(family.pipeline_names),
    )
    for module in (parts.unet, parts.vae, *parts.text_encoders.values()):
        module.requires_grad_(False)
        module.eval()
    return parts

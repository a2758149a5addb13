"""Model output formats: kohya LoRA .safetensors (A1111 / ComfyUI / kohya tools), diffusers LoRA folders, and LoRA
files in ComfyUI's own key names (families whose ComfyUI model keeps the original layout: Z-Image).

Every file is safetensors and written atomically (temp file or temp folder, then rename).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from diffusers.loaders.lora_base import LoraBaseMixin
from diffusers.utils import convert_state_dict_to_kohya
from safetensors.torch import save as safetensors_bytes

from tui_trainer.atomic import atomic_write_bytes
from tui_trainer.config.enums import LoraType
from tui_trainer.config.schema import LoraConfig, TrainConfig
from tui_trainer.train.families import train_family
from tui_trainer.train.original_layout import ORIGINAL_KEY_LAYOUTS

PEFT_PREFIXES: dict[str, str] = {"unet": "unet", "text_encoder": "text_encoder.text_model", "text_encoder_2": "text_encoder_2.text_model"}
"""Module-path prefix per part in the original (kohya / A1111) naming; transformers 5's CLIPTextModel state
dicts drop the `text_model.` level that the original layout has (CLIPTextModelWithProjection keeps it, so
keys are stripped of it first)."""


def kohya_metadata(config: TrainConfig, config_text: str, **totals: Any) -> dict[str, str]:
    """ss_* metadata kohya tools, A1111 and ComfyUI read, the SAI model spec keys, and our config."""
    denoiser, text_encoder = config.parts.denoiser, config.parts.text_encoder
    unet_lr = config.learning_rate_for(denoiser)
    te_lr = config.learning_rate_for(text_encoder)
    network_module = {LoraType.LORA: "networks.lora"}.get(config.lora.type, "lycoris.kohya")
    facts = train_family(config.model.family).saving
    values: dict[str, Any] = {
        "ss_network_module": network_module,
        "ss_network_dim": config.lora.rank,
        "ss_network_alpha": config.lora.alpha,
        "ss_network_dropout": config.lora.dropout,
        "ss_network_args": f'{{"algo": "{config.lora.type.value}"}}',
        "ss_base_model_version": facts.base_model_version,
        "ss_sd_model_name": config.model.base_model,
        "ss_v2": facts.kohya_v2,
        "ss_resolution": config.training.resolution,
        "ss_batch_size_per_device": config.training.batch_size,
        "ss_gradient_accumulation_steps": config.training.gradient_accumulation,
        "ss_num_epochs": config.training.epochs,
        "ss_learning_rate": config.optimizer.learning_rate,
        "ss_unet_lr": unet_lr if denoiser.train else 0,
        "ss_text_encoder_lr": te_lr if text_encoder.train else 0,
        "ss_optimizer": config.optimizer.name.value,
        "ss_lr_scheduler": config.scheduler.name.value,
        "ss_lr_warmup_steps": config.scheduler.warmup,
        "ss_seed": config.training.seed,
        "ss_mixed_precision": config.model.train_dtype.value,
        "ss_min_snr_gamma": config.training.min_snr_gamma or "",
        "ss_noise_offset": config.training.offset_noise,
        "ss_gradient_checkpointing": config.training.gradient_checkpointing,
        "ss_cache_latents": config.training.cache_latents,
        "ss_output_name": config.save.filename_prefix or config.workspace.run_name,
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": f"{facts.modelspec_architecture}/lora",
        "modelspec.implementation": "https://github.com/huggingface/diffusers",
        "modelspec.title": config.save.filename_prefix or config.workspace.run_name,
        "modelspec.resolution": config.training.resolution,
        "tui_trainer_config": config_text,
    }
    values.update({f"ss_{key}": value for key, value in totals.items()})
    return {key: str(value) for key, value in values.items()}


def _prefixed(state_dicts: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {f"{PEFT_PREFIXES[part]}.{key.removeprefix('text_model.')}": value for part, sd in state_dicts.items() for key, value in sd.items()}


def _lycoris_keys(state_dicts: dict[str, dict[str, torch.Tensor]], prefixes: dict[str, str]) -> dict[str, torch.Tensor]:
    """LoHa / LoKr in LyCORIS naming (`<prefix>_<module_path_with_underscores>.<param>`); hand-written
    because diffusers' kohya converter only knows plain LoRA, and peft's LoHa/LoKr parameter names
    (hada_w1_a, lokr_w1, ...) already are LyCORIS's."""
    out = {}
    for part, sd in state_dicts.items():
        head = prefixes[part]
        base = PEFT_PREFIXES[part].split(".", 1)[1] + "." if "." in PEFT_PREFIXES[part] else ""
        for key, value in sd.items():
            module, param = key.rsplit(".", 1)
            out[f"{head}_{(base + module.removeprefix('text_model.')).replace('.', '_')}.{param}"] = value
    return out


def kohya_state_dict(
    state_dicts: dict[str, dict[str, torch.Tensor]], lora: LoraConfig, prefixes: Mapping[str, str]
) -> dict[str, torch.Tensor]:
    """peft adapter state dicts per part -> one kohya state dict with the family's key prefix per part
    (lora_unet_*, lora_te_* / lora_te1_*, ...) and alphas."""
    if lora.type is LoraType.LORA:
        converted = convert_state_dict_to_kohya(_prefixed(state_dicts))
        # diffusers' converter names the first text encoder lora_te1 whatever the model.
        old, new = "lora_te1_", prefixes.get("text_encoder", "lora_te1") + "_"
        converted = {key.replace(old, new, 1) if key.startswith(old) else key: value for key, value in converted.items()}
    else:
        converted = _lycoris_keys(state_dicts, prefixes)
        converted.update({f"{key.rsplit('.', 1)[0]}.alpha": torch.tensor(0.0) for key in list(converted)})
    # diffusers' converter writes alpha = rank (scale 1); ours is lora.alpha.
    alpha = torch.tensor(float(lora.alpha))
    return {key: (alpha.clone() if key.endswith(".alpha") else value.detach().to("cpu").contiguous()) for key, value in converted.items()}


def save_kohya(
    state_dicts: dict[str, dict[str, torch.Tensor]], path: Path, metadata: dict[str, str], lora: LoraConfig, prefixes: Mapping[str, str]
) -> Path:
    """Write a kohya-format LoRA file atomically."""
    tensors = kohya_state_dict(state_dicts, lora, prefixes)
    atomic_write_bytes(path, safetensors_bytes(tensors, metadata=metadata))
    return path


def _fsync_tree(folder: Path) -> None:
    for file in folder.rglob("*"):
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())


def write_folder_atomically(target: Path, write: Any) -> Path:
    """Let `write(tmp_folder)` fill a temp folder beside `target`, fsync it, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        write(tmp)
        _fsync_tree(tmp)
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def save_diffusers_lora(
    pipeline_class: type, state_dicts: dict[str, dict[str, torch.Tensor]], folder: Path, adapter_metadata: dict[str, dict]
) -> Path:
    """Write a diffusers LoRA folder (pytorch_lora_weights.safetensors, peft key names) with the pipeline class's own saver."""
    layers = {f"{part}_lora_layers": sd for part, sd in state_dicts.items()}
    metadata = {f"{part}_lora_adapter_metadata": value for part, value in adapter_metadata.items()}

    def write(tmp: Path) -> None:
        if hasattr(pipeline_class, "save_lora_weights"):
            pipeline_class.save_lora_weights(str(tmp), safe_serialization=True, **layers, **metadata)
        else:
            # PixArt-alpha's and Stable Cascade's pipelines have no LoRA saver; diffusers' shared writer makes the
            # same file: '<component>.<peft key>' tensors, each component's peft config in the metadata.
            LoraBaseMixin._save_lora_weights(str(tmp), state_dicts, adapter_metadata, safe_serialization=True)

    return write_folder_atomically(folder, write)


COMFYUI_PREFIX = "diffusion_model."
"""Prefix of the denoiser's keys in a ComfyUI model's state dict."""


def comfyui_lora_state_dict(state: dict[str, torch.Tensor], lora: LoraConfig, layout: str) -> dict[str, torch.Tensor]:
    """A denoiser's peft LoRA in ComfyUI's own names: `diffusion_model.<original module>.lora_down.weight`, `.lora_up.weight`
    and `.alpha`.

    ComfyUI (Comfy-Org/ComfyUI) maps `diffusion_model.<module>` of its model's own state dict for every model (comfy/lora.py
    `model_lora_keys_unet`, "generic lora format") and `load_lora` / comfy/weight_adapter/lora.py `LoRAAdapter` add
    up @ down x alpha / down's rank. LoRAs on projections the original layout fuses (Z-Image's to_q / to_k / to_v in
    `attention.qkv`, comfy/utils.py `z_image_to_diffusers`) become one: the downs stacked (rank 3r), the ups
    block-diagonal, alpha x 3, so the delta and its scale alpha / r stay the same."""
    downs = {key.removesuffix(".lora_A.weight"): value for key, value in state.items() if key.endswith(".lora_A.weight")}
    ups = {key.removesuffix(".lora_B.weight"): value for key, value in state.items() if key.endswith(".lora_B.weight")}
    groups: dict[str, list[Any]] = {}  # original module -> the peft modules it takes, in row-block order
    for key, (original, block, blocks) in ORIGINAL_KEY_LAYOUTS[layout](f"{module}.weight" for module in downs).items():
        groups.setdefault(original.removesuffix(".weight"), [None] * blocks)[block] = key.removesuffix(".weight")
    scale = lora.alpha / lora.rank
    out = {}
    for original, modules in groups.items():
        down = torch.cat([downs[module] for module in modules])
        up = torch.block_diag(*(ups[module] for module in modules)) if len(modules) > 1 else ups[modules[0]]
        name = COMFYUI_PREFIX + original
        out |= {f"{name}.lora_down.weight": down, f"{name}.lora_up.weight": up, f"{name}.alpha": torch.tensor(scale * down.shape[0])}
    return {key: value.detach().to("cpu").contiguous() for key, value in out.items()}


def save_comfyui_lora(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str], lora: LoraConfig, layout: str) -> Path:
    """Write a denoiser's LoRA in ComfyUI's own names (comfyui_lora_state_dict) atomically."""
    atomic_write_bytes(path, safetensors_bytes(comfyui_lora_state_dict(state, lora, layout), metadata=metadata))
    return path

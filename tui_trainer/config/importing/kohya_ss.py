"""kohya_ss (bmaltais' GUI): its JSON presets and saved configs, made into the sd-scripts arguments the GUI would
pass, then imported like an sd-scripts training config. The report names the GUI's keys."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from tui_trainer.config.importing import kohya
from tui_trainer.config.importing.conversion import Conversion
from tui_trainer.config.importing.report import ImportReport
from tui_trainer.config.schema import TrainConfig

LORA_TYPES: dict[str, tuple[str, str]] = {
    "Standard": ("networks.lora", ""), "LoCon": ("networks.lora", "conv"), "Kohya LoCon": ("networks.lora", "conv"),
    "LyCORIS/LoCon": ("lycoris.kohya", "locon"), "LyCORIS/LoHa": ("lycoris.kohya", "loha"),
    "LyCORIS/LoKr": ("lycoris.kohya", "lokr"), "Flux1": ("networks.lora_flux", ""),
}
"""LoRA_type -> (sd-scripts network_module, LyCORIS algo or 'conv' for kohya's LoCon)."""
RENAMED = {"max_resolution": "resolution", "optimizer": "optimizer_type", "LoRA_type": "network_module",
           "sdxl_no_half_vae": "no_half_vae"}
"""GUI key -> the sd-scripts argument it becomes."""
CONSUMED = ("epoch", "lr_warmup", "conv_dim", "conv_alpha")
"""GUI keys that become other arguments (max_train_epochs, lr_warmup_steps, network_args)."""
ZERO_MEANS_UNSET = ("unet_lr", "text_encoder_lr", "max_train_steps", "max_train_epochs", "lr_warmup_steps", "noise_offset",
                    "min_snr_gamma", "save_every_n_epochs", "save_every_n_steps", "sample_every_n_epochs", "sample_every_n_steps")
"""Arguments the GUI leaves off its command line when they are 0."""
NO_CAPTIONS = ".none-use-foldername"
"""The GUI's caption_extension for 'no caption files: caption each image with its folder's class tokens'."""


def looks_like(document: Any) -> bool:
    """Whether a parsed JSON document is a kohya_ss GUI config (LoRA, DreamBooth or finetune tab)."""
    return isinstance(document, dict) and "__version" not in document and "model_type" not in document and (
        "LoRA_type" in document or ("pretrained_model_name_or_path" in document and "train_data_dir" in document))


def arguments(document: dict[str, Any]) -> dict[str, Any]:
    """The sd-scripts arguments the GUI runs with (GUI-only keys kept, for the report)."""
    args = {RENAMED.get(key, key): value for key, value in document.items() if key not in CONSUMED}
    for key in ZERO_MEANS_UNSET:
        if args.get(key) in (0, 0.0, "0", ""):
            args.pop(key, None)
    if "max_train_epochs" not in args and document.get("epoch") not in ("", None, 0):
        args["max_train_epochs"] = document["epoch"]
    lora_type = document.get("LoRA_type")
    if lora_type is not None:
        module, algo = LORA_TYPES.get(lora_type, (str(lora_type), ""))
        args["network_module"] = module
        extra = [f"algo={algo}"] if algo and algo != "conv" else []
        if algo and document.get("conv_dim"):
            extra += [f"conv_dim={document['conv_dim']}", f"conv_alpha={document.get('conv_alpha', 1)}"]
        args["network_args"] = extra
    warmup = document.get("lr_warmup")
    if "lr_warmup_steps" not in args and warmup not in (None, "", 0):
        args["lr_warmup_steps"] = float(warmup) / 100
    if isinstance(args.get("xformers"), str):
        args["sdpa"] = args["xformers"] == "sdpa"
        args["xformers"] = args["xformers"] == "xformers"
    if args.get("caption_extension") == NO_CAPTIONS:
        args["caption_extension"] = ".txt"
    return args


ORIGINS = {"network_args": "LoRA_type", "sdpa": "xformers", **{value: key for key, value in RENAMED.items()}}
"""sd-scripts argument -> the GUI key it came from (for the report)."""


def _origin(args: dict[str, Any], document: dict[str, Any], key: str) -> str:
    """The GUI key an argument came from."""
    if key == "max_train_epochs" and "max_train_epochs" in args and document.get("max_train_epochs") in ("", None, 0):
        return "epoch"
    if key == "lr_warmup_steps" and document.get("lr_warmup_steps") in ("", None, 0):
        return "lr_warmup"
    return ORIGINS.get(key, key)


def convert(path: Path, document: dict[str, Any]) -> tuple[TrainConfig, ImportReport]:
    """A kohya_ss GUI config as our config, with the report (keys named as the GUI names them)."""
    args = arguments(document)
    conversion = Conversion(path, "kohya_ss GUI config", args, kohya.DEFAULTS)
    kohya.convert_arguments(conversion)
    report = conversion.report
    report.keys = [replace(entry, key=_origin(args, document, entry.key)) for entry in report.keys]
    for key in CONSUMED:
        if key in document and not any(entry.key == key for entry in report.keys):
            conversion.unsupported(key, "unused" if document[key] in ("", 0, None) else "read into the keys above")
    return conversion.finish(), report

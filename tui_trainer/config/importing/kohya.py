"""kohya sd-scripts: a training config (`--config_file` TOML) with the dataset config it names, or a dataset
config alone ([general] / [[datasets]] / [[datasets.subsets]], each level inheriting from the one above).

Facts from sd-scripts' train_util / config_util argument defaults and docs/config_README; the code here is ours.
"""

from __future__ import annotations

import math
import re
import shlex
from pathlib import Path
from typing import Any

from tui_trainer.config.enums import Family
from tui_trainer.config.errors import ConfigError, ConfigProblem
from tui_trainer.config.importing.conversion import Conversion, read_toml, safe_name
from tui_trainer.config.importing.report import ImportReport
from tui_trainer.config.presets import load_preset
from tui_trainer.config.schema import TrainConfig

TRAINING_KEYS = frozenset({"pretrained_model_name_or_path", "network_module", "dataset_config", "train_data_dir",
                           "output_dir", "max_train_steps", "max_train_epochs", "optimizer_type", "network_dim"})
"""Keys only an sd-scripts training config has (one of them is enough)."""
DEFAULT_CAPTION_EXTENSION = ".caption"
"""sd-scripts' caption_extension when a subset does not set one."""
DEFAULTS: dict[str, Any] = {
    "learning_rate": 2e-6, "max_train_steps": 1600, "train_batch_size": 1, "lr_scheduler": "constant",
    "lr_warmup_steps": 0, "lr_scheduler_num_cycles": 1, "lr_scheduler_power": 1.0, "optimizer_type": "AdamW",
    "network_dim": 4, "network_alpha": 1.0, "network_dropout": 0.0, "mixed_precision": "no",
    "gradient_accumulation_steps": 1, "max_grad_norm": 1.0, "save_model_as": "safetensors",
    "max_data_loader_n_workers": 8, "gradient_checkpointing": False, "cache_latents": False,
    "cache_text_encoder_outputs": False, "enable_bucket": False, "min_bucket_reso": 256, "max_bucket_reso": 1024,
    "bucket_reso_steps": 64, "loss_type": "l2", "huber_c": 0.1, "resolution": "512", "seed": 42,
    "num_vectors_per_token": 1, "token_string": "<sks>", "init_word": "*",
}
"""sd-scripts' argument defaults of the keys we import (seed: sd-scripts picks a random one; we write 42)."""
SUBSET_DEFAULTS: dict[str, Any] = {"num_repeats": 1, "caption_extension": DEFAULT_CAPTION_EXTENSION, "keep_tokens": 0,
                                   "shuffle_caption": False, "flip_aug": False, "random_crop": False,
                                   "caption_prefix": "", "caption_suffix": "", "caption_dropout_rate": 0.0,
                                   "caption_tag_dropout_rate": 0.0, "is_reg": False}
"""sd-scripts' subset defaults."""
DATASET_OPTIONS = ("resolution", "batch_size", "enable_bucket", "min_bucket_reso", "max_bucket_reso", "bucket_reso_steps")

TEXT_ENCODERS = {"sd15": ("text_encoder",), "sd2": ("text_encoder",), "sdxl": ("text_encoder", "text_encoder_2"),
                 "flux1_dev": ("text_encoder", "text_encoder_2"), "flux1_schnell": ("text_encoder", "text_encoder_2"),
                 "chroma": ("text_encoder",)}
"""Our [parts.*] text-encoder tables per imported family (kohya's text_encoder_lr list follows this order)."""
MIXED_PRECISION = {"no": "float32", "fp16": "float16", "bf16": "bfloat16"}
OPTIMIZERS = {"adamw": "adamw", "adamw8bit": "adamw8bit", "pagedadamw8bit": "adamw8bit", "lion": "lion",
              "lion8bit": "lion8bit", "pagedlion8bit": "lion8bit", "sgdnesterov": "sgd", "prodigy": "prodigy",
              "adafactor": "adafactor", "adamwschedulefree": "schedule_free_adamw",
              "schedulefree.adamwschedulefree": "schedule_free_adamw", "prodigyopt.prodigy": "prodigy",
              "bitsandbytes.optim.adamw8bit": "adamw8bit"}
"""sd-scripts optimizer_type (lower case) -> ours."""
OPTIMIZER_ARGS = {"weight_decay": "weight_decay", "eps": "eps", "d_coef": "d_coef", "use_bias_correction": "use_bias_correction",
                  "safeguard_warmup": "safeguard_warmup", "relative_step": "relative_step", "scale_parameter": "scale_parameter",
                  "warmup_init": "warmup_init", "momentum": "momentum", "nesterov": "nesterov"}
SCHEDULERS = {"constant": "constant", "constant_with_warmup": "constant", "linear": "linear", "cosine": "cosine",
              "cosine_with_restarts": "cosine_with_restarts", "polynomial": "polynomial", "adafactor": "adafactor"}
LYCORIS_ALGOS = {"lora": "lora", "locon": "lora", "loha": "loha", "lokr": "lokr"}
NETWORK_MODULES = {"networks.lora": "lora", "networks.lora_flux": "lora", "networks.lora_sd3": "lora", "lycoris.kohya": "lycoris"}
SAMPLERS = {"ddim": "ddim", "pndm": "pndm", "lms": "lms", "k_lms": "lms", "euler": "euler", "k_euler": "euler",
            "euler_a": "euler_a", "k_euler_a": "euler_a", "heun": "heun", "dpm_2": "dpm2", "k_dpm_2": "dpm2",
            "dpm_2_a": "dpm2_a", "k_dpm_2_a": "dpm2_a", "dpmsolver": "dpmpp_2m", "dpmsolver++": "dpmpp_2m",
            "dpmsingle": "dpmpp_sde", "ddpm": "ddpm"}
SAVE_FORMATS = {"safetensors": ("kohya", "single_file"), "ckpt": ("kohya", "single_file"),
                "diffusers": ("diffusers", "diffusers"), "diffusers_safetensors": ("diffusers", "diffusers")}
"""save_model_as -> our output format (LoRA, full model)."""
REPEAT_FOLDER = re.compile(r"^(\d+)_(.*)$")
"""sd-scripts' DreamBooth folder name: '<repeats>_<class tokens>'."""


def _ours(document: Any) -> bool:
    return isinstance(document, dict) and ("model" in document or "version" in document)


def looks_like_training(document: Any) -> bool:
    """Whether a parsed TOML document is an sd-scripts training config (flat, or in sections)."""
    return isinstance(document, dict) and not _ours(document) and bool(TRAINING_KEYS & set(flat_arguments(document)))


def looks_like_dataset(document: Any) -> bool:
    """Whether a parsed TOML document is an sd-scripts dataset config."""
    return isinstance(document, dict) and not _ours(document) and isinstance(document.get("datasets"), list)


def flat_arguments(document: dict[str, Any]) -> dict[str, Any]:
    """sd-scripts reads a config file's sections ([model_arguments] ...) as one flat set of arguments."""
    flat: dict[str, Any] = {}
    for key, value in document.items():
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    return flat


def parse_arguments(items: Any) -> dict[str, Any]:
    """["weight_decay=0.01", "betas=0.9,0.99"] (or one space-separated string) -> {name: value}."""
    words = shlex.split(items) if isinstance(items, str) else list(items or [])
    parsed: dict[str, Any] = {}
    for word in words:
        name, _, text = str(word).partition("=")
        parsed[name.strip()] = _literal(text.strip())
    return parsed


def _literal(text: str) -> Any:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if "," in text:
        return [_literal(part) for part in text.split(",")]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _family(conversion: Conversion) -> str:
    """The family the training config is for: kohya's flags, else a guess from the model's name (warned)."""
    name = str(conversion.get("pretrained_model_name_or_path", "")).lower()
    conversion.read.update({"v2", "sdxl", "model_type"})
    if conversion.given("model_type") and str(conversion.values["model_type"]).lower() == "chroma":
        family = "chroma"
    elif any(conversion.given(key) for key in ("t5xxl", "ae", "flux1_checkbox")) or "flux" in name:
        family = "flux1_schnell" if "schnell" in name else "flux1_dev"
    elif conversion.given("v2") and conversion.values["v2"]:
        family = "sd2"
    elif conversion.given("sdxl"):
        family = "sdxl" if conversion.values["sdxl"] else "sd15"
    else:
        family = "sdxl" if "xl" in name else "sd15"
        conversion.warn(f"the config does not say which model family it trains; guessed {family} from the model name "
                        "(set model.family if that is wrong)")
    if family not in Family._value2member_map_:
        raise ConfigError([ConfigProblem(str(conversion.source), "pretrained_model_name_or_path",
                                         f"a {family} config cannot be imported: this tui-trainer has no family {family!r} yet")])
    flags = ("model_type", "flux1_checkbox", "t5xxl", "ae", "sdxl", "v2")
    key = next((key for key in flags if conversion.given(key) and conversion.values[key]),
               next((key for key in flags if conversion.given(key)), "pretrained_model_name_or_path"))
    conversion.put(key, "model.family", family)
    return family


def _method(conversion: Conversion) -> str:
    if conversion.given("network_module"):
        module = str(conversion.get("network_module"))
        kind = NETWORK_MODULES.get(module)
        arguments = parse_arguments(conversion.get("network_args"))
        conversion.read.add("network_args")
        lora_type = "lora"
        if kind == "lycoris":
            algo = str(arguments.pop("algo", "lora")).lower()
            lora_type = LYCORIS_ALGOS.get(algo)
            if lora_type is None:
                conversion.warn(f"network_args algo={algo!r} has no equivalent (importable: {', '.join(LYCORIS_ALGOS)}); imported as lora")
                lora_type = "lora"
        elif kind is None:
            conversion.warn(f"network_module {module!r} has no equivalent (importable: {', '.join(NETWORK_MODULES)}); imported as lora")
        conversion.put("network_module", "method", "lora")
        conversion.put("network_module", "lora.type", lora_type)
        if "conv_dim" in arguments:
            conversion.put("network_args", "lora.targets", "full", note="conv_dim: LoCon-style, adapters on the 1x1 convs too")
            arguments.pop("conv_dim")
            arguments.pop("conv_alpha", None)
        for name in arguments:
            conversion.warn(f"network_args {name}={arguments[name]!r} has no equivalent; left out")
        return "lora"
    if conversion.given("token_string") or conversion.given("init_word"):
        conversion.put("token_string", "method", "embedding")
        return "embedding"
    conversion.put("pretrained_model_name_or_path", "method", "finetune", note="no network_module: a full finetune")
    return "finetune"


def _model(conversion: Conversion, family: str, method: str) -> None:
    conversion.put("pretrained_model_name_or_path", "model.base_model",
                   conversion.path(conversion.get("pretrained_model_name_or_path"), model=True))
    if conversion.given("vae"):
        conversion.put("vae", "model.vae", conversion.path(conversion.get("vae"), model=True))
    if conversion.get("v_parameterization"):
        conversion.put("v_parameterization", "model.prediction_type", "v_prediction")
    if conversion.get("zero_terminal_snr"):
        conversion.put("zero_terminal_snr", "model.zero_terminal_snr", True)
    dtype = conversion.choose("mixed_precision", MIXED_PRECISION, "mixed precision") or "float32"
    conversion.put("mixed_precision", "model.train_dtype", dtype)
    full = "float16" if conversion.get("full_fp16") else "bfloat16" if conversion.get("full_bf16") else None
    stored = full or dtype
    denoiser = "float8" if conversion.get("fp8_base") else stored
    conversion.put("fp8_base" if conversion.get("fp8_base") else "mixed_precision", "parts.denoiser.dtype", denoiser,
                   note="kohya holds the frozen weights in the mixed-precision dtype")
    conversion.read.update({"full_fp16", "full_bf16"})
    if method == "embedding":
        stored = "float32"
    for table in TEXT_ENCODERS[family]:
        conversion.put("mixed_precision", f"parts.{table}.dtype", stored)
    conversion.put("no_half_vae", "model.vae_dtype", "float32",
                   note="" if conversion.get("no_half_vae") else "kohya holds the VAE in the mixed-precision dtype")


def _learning_rates(conversion: Conversion, family: str, method: str) -> None:
    conversion.put("learning_rate", "optimizer.learning_rate", float(conversion.get("learning_rate")))
    if method == "embedding":
        return
    encoders = TEXT_ENCODERS[family]
    unet_only = bool(conversion.get("network_train_unet_only"))
    te_only = bool(conversion.get("network_train_text_encoder_only"))
    if conversion.given("unet_lr"):
        conversion.put("unet_lr", "parts.denoiser.learning_rate", float(conversion.get("unet_lr")))
    conversion.put("network_train_text_encoder_only", "parts.denoiser.train", not te_only)
    rates = conversion.get("text_encoder_lr")
    rates = list(rates) if isinstance(rates, list) else [rates] * len(encoders)
    trains_encoders = method == "finetune" and bool(conversion.get("train_text_encoder")) or method == "lora" and not unet_only
    conversion.read.add("train_text_encoder")
    for table, rate in zip(encoders, rates + rates[-1:] * len(encoders)):
        train = trains_encoders and rate != 0
        conversion.put("network_train_unet_only" if method == "lora" else "train_text_encoder", f"parts.{table}.train", train,
                       note="text_encoder_lr 0 freezes it" if rate == 0 and trains_encoders else "")
        if rate not in (None, "", 0):
            conversion.put("text_encoder_lr", f"parts.{table}.learning_rate", float(rate))


def _optimizer(conversion: Conversion) -> None:
    raw = str(conversion.get("optimizer_type") or "AdamW")
    name = OPTIMIZERS.get(raw.lower())
    if name is None:
        conversion.warn(f"optimizer_type {raw!r} has no equivalent (importable: AdamW, AdamW8bit, Lion, Lion8bit, "
                        "SGDNesterov, Prodigy, AdaFactor, AdamWScheduleFree); imported as adamw")
        name = "adamw"
    conversion.put("optimizer_type", "optimizer.name", name)
    arguments = parse_arguments(conversion.get("optimizer_args"))
    conversion.read.add("optimizer_args")
    if name == "sgd" and raw.lower() == "sgdnesterov":
        arguments = {"momentum": 0.9, "nesterov": True, **arguments}
    betas = arguments.pop("betas", None)
    if isinstance(betas, list) and len(betas) >= 2:
        arguments.update(beta1=betas[0], beta2=betas[1])
    from tui_trainer.config.enums import OptimizerName
    from tui_trainer.config.schema import OPTIMIZER_SETTINGS

    known = OPTIMIZER_SETTINGS[OptimizerName(name)].model_fields
    for argument, value in arguments.items():
        setting = OPTIMIZER_ARGS.get(argument, argument if argument in ("beta1", "beta2") else None)
        if setting in known:
            conversion.put("optimizer_args", f"optimizer.settings.{name}.{setting}", value, note=f"{argument}={value}")
        else:
            conversion.warn(f"optimizer_args {argument}={value!r} has no equivalent for {name}; left out")


def _scheduler(conversion: Conversion) -> None:
    raw = str(conversion.get("lr_scheduler"))
    name = SCHEDULERS.get(raw)
    if name is None:
        conversion.warn(f"lr_scheduler {raw!r} has no equivalent (importable: {', '.join(SCHEDULERS)}); imported as constant")
        name = "constant"
    conversion.put("lr_scheduler", "scheduler.name", name)
    warmup = float(conversion.get("lr_warmup_steps") or 0)
    if raw == "constant" and warmup:
        conversion.warn("lr_scheduler constant: kohya's constant ignores lr_warmup_steps; tui-trainer's constant warms up "
                        "(imported with warmup 0)")
        warmup = 0
    conversion.put("lr_warmup_steps", "scheduler.warmup", warmup if 0 < warmup < 1 else int(warmup))
    cycles = conversion.get("lr_scheduler_power") if name == "polynomial" else conversion.get("lr_scheduler_num_cycles")
    key = "lr_scheduler_power" if name == "polynomial" else "lr_scheduler_num_cycles"
    conversion.put(key, "scheduler.cycles", max(1, int(round(float(cycles or 1)))))
    if conversion.given("lr_scheduler_min_lr_ratio"):
        conversion.put("lr_scheduler_min_lr_ratio", "scheduler.min_lr_factor", float(conversion.get("lr_scheduler_min_lr_ratio")))


def _length(conversion: Conversion) -> None:
    if conversion.given("max_train_epochs"):
        conversion.put("max_train_epochs", "training.epochs", int(conversion.get("max_train_epochs")))
        conversion.unsupported("max_train_steps", "max_train_epochs overrides it in kohya")
        return
    conversion.put("max_train_steps", "training.max_steps", int(conversion.get("max_train_steps")))
    conversion.put("max_train_steps", "training.epochs", 100000, note="kohya counts steps: epochs run until max_steps")


def _training(conversion: Conversion) -> None:
    conversion.put("train_batch_size", "training.batch_size", int(conversion.get("train_batch_size")))
    conversion.put("gradient_accumulation_steps", "training.gradient_accumulation", int(conversion.get("gradient_accumulation_steps")))
    conversion.put("seed", "training.seed", abs(int(conversion.get("seed"))))
    conversion.put("gradient_checkpointing", "training.gradient_checkpointing", bool(conversion.get("gradient_checkpointing")))
    conversion.put("cache_latents", "training.cache_latents", bool(conversion.get("cache_latents")))
    conversion.read.add("cache_latents_to_disk")
    conversion.put("cache_text_encoder_outputs", "training.cache_text_encoder_outputs", bool(conversion.get("cache_text_encoder_outputs")))
    norm = float(conversion.get("max_grad_norm") or 0)
    if norm > 0:
        conversion.put("max_grad_norm", "training.clip_grad_norm", norm)
    else:
        conversion.warn("max_grad_norm 0 (no clipping) cannot be written; training.clip_grad_norm stays 1.0")
        conversion.unsupported("max_grad_norm", "0 (no clipping) cannot be written")
    if conversion.given("noise_offset"):
        conversion.put("noise_offset", "training.offset_noise", float(conversion.get("noise_offset")))
    if conversion.get("min_snr_gamma"):
        conversion.put("min_snr_gamma", "training.min_snr_gamma", float(conversion.get("min_snr_gamma")))
    loss = str(conversion.get("loss_type"))
    if loss in ("huber", "smooth_l1"):
        conversion.put("loss_type", "training.loss", "huber", note="" if loss == "huber" else "smooth_l1 imported as huber")
        conversion.put("huber_c", "training.huber_delta", float(conversion.get("huber_c")))
    else:
        conversion.put("loss_type", "training.loss", "mse")
        conversion.read.add("huber_c")
    if conversion.get("masked_loss"):
        conversion.put("masked_loss", "training.masked_training", True)
    attention = "xformers" if conversion.get("xformers") is True or conversion.get("xformers") == "xformers" else "sdpa"
    conversion.put("xformers" if conversion.given("xformers") else "sdpa", "training.attention", attention)
    conversion.read.update({"sdpa", "mem_eff_attn"})
    workers = conversion.get("max_data_loader_n_workers")
    conversion.put("max_data_loader_n_workers", "training.dataloader_workers", min(64, int(workers or 0)))
    if conversion.given("log_with"):
        conversion.put("log_with", "training.tensorboard", "tensorboard" in str(conversion.get("log_with")) or conversion.get("log_with") == "all")


def _resolution(conversion: Conversion, key: str, value: Any) -> str | None:
    """kohya's 512, '512', 'W,H' or [W, H] (an area its buckets keep) as our resolution text (one side)."""
    items = value if isinstance(value, list) else str(value).replace("x", ",").split(",")
    try:
        sides = [int(float(side)) for side in items if str(side).strip()]
    except ValueError:
        sides = []
    if not sides:
        conversion.unsupported(key, f"{value!r} is not a resolution; training.resolution keeps its default")
        return None
    width, height = sides[0], sides[-1]
    side = width if width == height else int(round(math.sqrt(width * height) / 8) * 8)
    if width != height:
        conversion.warn(f"{key} {value!r}: kohya's W,H is an area its buckets keep; imported as side {side}")
    return str(side)


def _bucketing(conversion: Conversion, prefix: str, keys: dict[str, str]) -> None:
    """enable_bucket / min, max bucket size / bucket step (from the training config or a dataset table)."""
    for source, target in (("min_bucket_reso", "training.bucket_min_side"), ("max_bucket_reso", "training.bucket_max_side")):
        key = keys.get(source, f"{prefix}{source}")
        if conversion.given(key):
            conversion.put(key, target, int(conversion.get(key)))
    key = keys.get("bucket_reso_steps", f"{prefix}bucket_reso_steps")
    if conversion.given(key):
        step = int(conversion.get(key))
        if step % 8 or step < 8:
            conversion.unsupported(key, f"bucket step {step} must be a multiple of 8; the family's default is used")
        else:
            conversion.put(key, "training.bucket_step", step)
    key = keys.get("enable_bucket", f"{prefix}enable_bucket")
    if not conversion.get(key):
        conversion.warn(f"{key}: without buckets kohya crops every image to the resolution; tui-trainer buckets by aspect ratio")
        conversion.unsupported(key, "tui-trainer always buckets by aspect ratio")


def _outputs(conversion: Conversion, method: str) -> None:
    name = safe_name(str(conversion.get("output_name") or conversion.source.stem))
    conversion.put("output_name" if conversion.given("output_name") else "output_dir", "workspace.run_name", name)
    if conversion.given("output_name"):
        conversion.put("output_name", "save.filename_prefix", name)
    if conversion.given("output_dir"):
        folder = conversion.path(conversion.get("output_dir"))
        conversion.put("output_dir", "workspace.output_path", folder)
        conversion.put("output_dir", "workspace.dir", str(Path(folder).parent / "workspace"),
                       note="runs, backups and caches go beside the output folder")
    lora, full = SAVE_FORMATS.get(str(conversion.get("save_model_as")), ("kohya", "single_file"))
    conversion.put("save_model_as", "workspace.output_format", {"lora": lora, "finetune": full, "embedding": "a1111"}[method])
    if conversion.get("save_model_as") == "ckpt":
        conversion.warn("save_model_as ckpt: tui-trainer writes .safetensors")
    for key, unit in (("save_every_n_steps", "steps"), ("save_every_n_epochs", "epochs")):
        if conversion.get(key):
            conversion.put(key, "save.every", int(conversion.get(key)))
            conversion.put(key, "save.unit", unit)
            break
    for key, unit in (("sample_every_n_steps", "steps"), ("sample_every_n_epochs", "epochs")):
        if conversion.get(key):
            conversion.put(key, "sampling.every", int(conversion.get(key)))
            conversion.put(key, "sampling.unit", unit)
            break
    if conversion.given("sample_prompts"):
        _sample_prompts(conversion, str(conversion.get("sample_prompts")))


def _sample_prompts(conversion: Conversion, value: str) -> None:
    """A prompts .txt (one prompt a line, with --n --w --h --d --l --s options), or the prompt text itself."""
    path = Path(conversion.path(value))
    if path.is_file() and path.suffix == ".txt":
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        conversion.report.files.append(str(path))
    elif value.endswith((".txt", ".toml", ".json")):
        conversion.warn(f"sample_prompts {value!r}: " + ("only .txt prompt files are imported" if path.exists() else "file does not exist here"))
        return
    else:
        lines = value.splitlines()
    sampler = SAMPLERS.get(str(conversion.get("sample_sampler", "ddim")).lower(), "euler_a")
    count = 0
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        prompt, *options = re.split(r"\s--", " " + line.strip())
        sample: dict[str, Any] = {"prompt": prompt.strip() or line.strip(), "sampler": sampler}
        for option in options:
            flag, _, text = option.partition(" ")
            fields = {"n": ("negative_prompt", str), "w": ("width", int), "h": ("height", int), "d": ("seed", int),
                      "l": ("cfg", float), "s": ("steps", int)}
            if flag in fields:
                name, kind = fields[flag]
                try:
                    sample[name] = kind(text.strip())
                except ValueError:
                    conversion.warn(f"sample_prompts: --{flag} {text.strip()!r} is not a number; left out")
        for side in ("width", "height"):
            if side in sample:
                sample[side] = max(64, min(4096, sample[side] - sample[side] % 8))
        conversion.put("sample_prompts", f"samples[{count}]", sample)
        count += 1
    conversion.read.add("sample_sampler")


def _embedding(conversion: Conversion) -> None:
    conversion.put("token_string", "embedding.placeholder_token", str(conversion.get("token_string")).replace(" ", ""))
    conversion.put("init_word", "embedding.init_text", str(conversion.get("init_word")))
    conversion.put("num_vectors_per_token", "embedding.num_vectors", int(conversion.get("num_vectors_per_token")))


def _network(conversion: Conversion) -> None:
    conversion.put("network_dim", "lora.rank", int(conversion.get("network_dim")))
    conversion.put("network_alpha", "lora.alpha", float(conversion.get("network_alpha")))
    conversion.put("network_dropout", "lora.dropout", float(conversion.get("network_dropout") or 0.0))


def convert_training(path: Path, document: dict[str, Any]) -> tuple[TrainConfig, ImportReport]:
    """An sd-scripts training config (and the dataset config it names) as our config, with the report."""
    conversion = Conversion(path, "kohya sd-scripts training config", flat_arguments(document), DEFAULTS)
    convert_arguments(conversion)
    return conversion.finish(), conversion.report


def convert_arguments(conversion: Conversion) -> None:
    """Map sd-scripts arguments (from a training config, or a kohya_ss GUI config made into them)."""
    family = _family(conversion)
    method = _method(conversion)
    _model(conversion, family, method)
    _learning_rates(conversion, family, method)
    _optimizer(conversion)
    _scheduler(conversion)
    _length(conversion)
    _training(conversion)
    if method == "lora":
        _network(conversion)
    if method == "embedding":
        _embedding(conversion)
    _outputs(conversion, method)
    if conversion.given("dataset_config"):
        dataset = Path(conversion.path(str(conversion.get("dataset_config"))))
        _dataset_file(conversion, dataset)
        ignored = [key for key in SUBSET_DEFAULTS if conversion.given(key)] + [
            key for key in ("resolution", "train_data_dir", "reg_data_dir", "enable_bucket", "min_bucket_reso",
                            "max_bucket_reso", "bucket_reso_steps", "color_aug") if conversion.given(key)]
        for key in ignored:
            conversion.unsupported(key, "kohya ignores it when dataset_config is given")
    else:
        _folders(conversion)
    conversion.leftovers()


def _dataset_file(conversion: Conversion, dataset: Path) -> None:
    if not dataset.is_file():
        raise ConfigError([ConfigProblem(str(conversion.source), "dataset_config", f"dataset config {str(dataset)!r} does not exist")])
    document = read_toml(dataset, "a kohya dataset config ([general], [[datasets]], [[datasets.subsets]])")
    if not looks_like_dataset(document):
        raise ConfigError([ConfigProblem(str(dataset), "datasets", "is not a kohya dataset config; expected [[datasets]] tables")])
    conversion.report.files.append(str(dataset))
    _datasets(conversion, document, f"{dataset.name}:", dataset.parent)


def _datasets(conversion: Conversion, document: dict[str, Any], label: str, folder: Path) -> None:
    """[general] < [[datasets]] < [[datasets.subsets]]: each subset becomes one concept."""
    general = document.get("general") or {}
    conversion.values.update({f"{label}general.{key}": value for key, value in general.items()})
    first: dict[str, Any] = {}
    concepts = 0
    for number, dataset in enumerate(document.get("datasets") or []):
        where = f"{label}datasets[{number}]."
        options = {key: value for key, value in dataset.items() if key != "subsets"}
        conversion.values.update({f"{where}{key}": value for key, value in options.items()})

        def level(name: str) -> str:
            return next((key for key in (f"{where}{name}", f"{label}general.{name}") if conversion.given(key)), f"{where}{name}")

        resolution_key, batch_key = level("resolution"), level("batch_size")
        resolution = _resolution(conversion, resolution_key, conversion.get(resolution_key, DEFAULTS["resolution"]))
        if number == 0:
            first = {"resolution": resolution}
            conversion.put(resolution_key, "training.resolution", resolution)
            if conversion.given(batch_key):
                conversion.put(batch_key, "training.batch_size", int(conversion.get(batch_key)))
            _bucketing(conversion, "", {name: level(name) for name in DATASET_OPTIONS})
        else:
            for name in DATASET_OPTIONS:
                if name != "resolution" and conversion.given(f"{where}{name}"):
                    conversion.unsupported(f"{where}{name}", "one value for all concepts: the first dataset's is used")
        for index, subset in enumerate(dataset.get("subsets") or []):
            inner = f"{where}subsets[{index}]."
            conversion.values.update({f"{inner}{key}": value for key, value in subset.items()})
            keys = lambda name, inner=inner, where=where: (f"{inner}{name}", f"{where}{name}", f"{label}general.{name}")  # noqa: E731
            _subset(conversion, concepts, keys, resolution if resolution != first.get("resolution") else None, folder)
            concepts += 1
    if not concepts:
        conversion.warn(f"{label} no [[datasets.subsets]]: no concepts imported")


def _option(conversion: Conversion, keys: tuple[str, ...], name: str) -> tuple[str, Any]:
    """The most specific level that sets a subset option, and its value (else sd-scripts' default)."""
    for key in keys:
        if conversion.given(key):
            return key, conversion.get(key)
    return keys[0], SUBSET_DEFAULTS.get(name)


def _subset(conversion: Conversion, index: int, keys, resolution: str | None, folder: Path) -> None:
    target = f"concepts[{index}]"
    image_key, image_dir = _option(conversion, keys("image_dir"), "image_dir")
    if image_dir is None:
        raise ConfigError([ConfigProblem(str(conversion.source), image_key, "a subset needs image_dir")])
    path = _relative_to(conversion, str(image_dir), folder)
    conversion.put(image_key, f"{target}.path", path)
    conversion.document["concepts"][index]["name"] = Path(path).name or f"subset-{index}"
    conversion.check_exists(image_key, path, "image folder")
    option = lambda name: _option(conversion, keys(name), name)  # noqa: E731
    key, repeats = option("num_repeats")
    conversion.put(key, f"{target}.repeats", float(repeats), note="each image counts this many times per epoch")
    _captions(conversion, target, path, option)
    key, flip = option("flip_aug")
    conversion.put(key, f"{target}.flip_probability", 0.5 if flip else 0.0)
    key, crop = option("random_crop")
    conversion.put(key, f"{target}.crop_jitter", 1.0 if crop else 0.0)
    key, reg = option("is_reg")
    if reg:
        conversion.put(key, f"{target}.enabled", False, note="regularization images have no equivalent: imported disabled")
        conversion.warn(f"{key}: regularization images (prior preservation) have no equivalent; the concept is imported disabled")
    for name in ("color_aug", "metadata_file", "keep_tokens_separator", "secondary_separator", "enable_wildcard"):
        for level_key in keys(name):
            conversion.unsupported(level_key)
    if resolution:
        conversion.put(keys("resolution")[1], f"{target}.resolution", resolution)


def _relative_to(conversion: Conversion, value: str, folder: Path) -> str:
    """A path from a dataset config: relative ones are relative to that file's folder."""
    candidate = Path(value).expanduser()
    return str(candidate) if candidate.is_absolute() else conversion.path(str(Path(folder) / candidate))


def _captions(conversion: Conversion, target: str, path: str, option) -> None:
    key, extension = option("caption_extension")
    extension = str(extension) if str(extension).startswith(".") else f".{extension}"
    conversion.put(key, f"{target}.caption_source", "txt",
                   note="" if extension == ".txt" else f"tui-trainer reads <image>.txt, not <image>{extension}")
    if extension != ".txt":
        conversion.warn(f"{key}: captions are read from <image>.txt; kohya reads <image>{extension} here"
                        + ("" if conversion.given(key) else " (its default)") + ": rename or copy them to .txt")
    folder = Path(path)
    has_captions = folder.is_dir() and any(folder.glob(f"*{extension}"))
    key, tokens = option("class_tokens")
    if tokens:
        if folder.is_dir() and not has_captions:
            conversion.put(key, f"{target}.caption_prefix", f"{tokens}",
                           note="kohya captions images without a caption file with class_tokens")
        else:
            conversion.unsupported(key, "kohya uses it only for images without a caption file; set caption_prefix if you need it")
    for name, field, kind in (("keep_tokens", "keep_tokens", int), ("shuffle_caption", "shuffle_tags", bool),
                              ("caption_dropout_rate", "caption_dropout", float), ("caption_tag_dropout_rate", "tag_dropout", float)):
        key, value = option(name)
        conversion.put(key, f"{target}.{field}", kind(value))
    for name in ("caption_prefix", "caption_suffix"):
        key, value = option(name)
        if value:
            existing = conversion.document["concepts"][int(target[9:-1])].get(name, "")
            conversion.put(key, f"{target}.{name}", f"{existing}{value}")


def _folders(conversion: Conversion) -> None:
    """train_data_dir / reg_data_dir without a dataset config: each '<repeats>_<class tokens>' folder is a concept."""
    index = 0
    for key in ("train_data_dir", "reg_data_dir"):
        if not conversion.given(key):
            continue
        root = Path(conversion.path(str(conversion.get(key))))
        folders = sorted(child for child in root.iterdir() if child.is_dir() and REPEAT_FOLDER.match(child.name)) if root.is_dir() else []
        if not folders:
            conversion.warn(f"{key}: {str(root)!r} " + ("has no '<repeats>_<name>' folders" if root.is_dir() else "does not exist here")
                            + "; imported as one concept with 1 repeat")
            folders = [root]
        for folder in folders:
            match = REPEAT_FOLDER.match(folder.name) if folder != root else None
            values = {"num_repeats": int(match.group(1)) if match else 1, "class_tokens": match.group(2) if match else "",
                      "is_reg": key == "reg_data_dir"}
            label = f"{key}/{folder.name}" if match else key
            conversion.values.update({f"{label}:{name}": value for name, value in values.items() if value})
            conversion.values[f"{label}:image_dir"] = str(folder)
            keys = lambda name, label=label: (f"{label}:{name}", name)  # noqa: E731
            _subset(conversion, index, keys, None, conversion.source.parent)
            index += 1
    resolution = conversion.get("resolution")
    conversion.put("resolution", "training.resolution", _resolution(conversion, "resolution", resolution))
    _bucketing(conversion, "", {})


def convert_dataset(path: Path, document: dict[str, Any]) -> tuple[TrainConfig, ImportReport]:
    """A dataset config alone: its concepts, resolution and batch size on the sd15-lora preset (set the model)."""
    conversion = Conversion(path, "kohya sd-scripts dataset config", {}, {})
    from tui_trainer.config.io import config_to_dict

    preset = config_to_dict(load_preset("sd15-lora"))
    conversion.document.update({key: value for key, value in preset.items() if key not in ("concepts", "workspace")})
    conversion.document["workspace"] = {"run_name": safe_name(path.stem), "dir": conversion.path("workspace")}
    conversion.warn("a dataset config alone: model and training settings come from the sd15-lora preset; "
                    "set model.family and model.base_model")
    _datasets(conversion, document, "", path.parent)
    conversion.leftovers()
    return conversion.finish(), conversion.report

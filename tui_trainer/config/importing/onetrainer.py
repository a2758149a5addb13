"""OneTrainer: saved configs of every `__version` (migrated step by step as OneTrainer does), sparse presets
(absent keys take OneTrainer's defaults), and the concepts and samples files they name.

Facts from OneTrainer's modules/util/config (TrainConfig, ConceptConfig, SampleConfig) and its enums; the code
here is ours.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tui_trainer.config.errors import ConfigError, ConfigProblem
from tui_trainer.config.importing.conversion import Conversion, flatten, read_json, safe_name
from tui_trainer.config.enums import Family, OptimizerName
from tui_trainer.config.importing.report import ImportReport, KeyReport, Outcome
from tui_trainer.config.schema import OPTIMIZER_SETTINGS as OUR_OPTIMIZER_SETTINGS
from tui_trainer.config.schema import TrainConfig, parse_resolution

LATEST_VERSION = 12
"""The newest OneTrainer config `__version` these migrations know."""

CASCADE_TYPES = ("STABLE_CASCADE_1", "WUERSTCHEN_2")
OLD_PART_PREFIXES = ("unet", "prior", "text_encoder", "text_encoder_2")
"""Version 0 parts with flat train_<part> / <part>_learning_rate / <part>_weight_dtype keys."""
OLD_MODEL_PARTS = ("vae", "effnet_encoder", "decoder", "decoder_text_encoder", "decoder_vqgan")
"""Version 0 parts with flat <part>_model_name / <part>_weight_dtype keys."""
ALL_PARTS = ("unet", "prior", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "text_encoder_4",
             "vae", "effnet_encoder", "decoder", "decoder_text_encoder", "decoder_vqgan")


def _optimizer_table(data: dict) -> dict:
    """0 -> 1: flat optimizer / optimizer_<setting> keys become an `optimizer` table (and optimizer_defaults)."""
    if not isinstance(data.get("optimizer"), str):
        return data
    settings = {"optimizer": data["optimizer"]}
    migrated = {}
    for key, value in data.items():
        if key.startswith("optimizer_") and key != "optimizer_defaults":
            settings[key.removeprefix("optimizer_")] = value
        elif key != "optimizer":
            migrated[key] = value
    migrated["optimizer"] = settings
    migrated.setdefault("optimizer_defaults", {settings["optimizer"]: copy.deepcopy(settings)})
    return migrated


def _part_tables(data: dict) -> dict:
    """1 -> 2: flat per-part keys (train_unet, unet_learning_rate, unet_weight_dtype ...) become part tables."""
    migrated: dict[str, Any] = {}
    parts: dict[str, dict] = {}

    def part(name: str) -> dict:
        return parts.setdefault(name, dict(data.get(name) or {}) if isinstance(data.get(name), dict) else {})

    moves: dict[str, tuple[str, str]] = {}
    for name in OLD_PART_PREFIXES:
        moves |= {f"train_{name}": (name, "train"), f"{name}_learning_rate": (name, "learning_rate"),
                  f"{name}_weight_dtype": (name, "weight_dtype"), f"{name}_model_name": (name, "model_name")}
    for name in OLD_MODEL_PARTS:
        moves |= {f"{name}_model_name": (name, "model_name"), f"{name}_weight_dtype": (name, "weight_dtype")}
    embedding: dict[str, Any] = {}
    for key, value in data.items():
        if key in moves:
            name, field = moves[key]
            part(name)[field] = value
        elif key.startswith("train_") and key.endswith("_epochs") and key[6:-7] in OLD_PART_PREFIXES:
            part(key[6:-7]).update(stop_training_after=value, stop_training_after_unit="EPOCH")
        elif key == "embedding_model_names":
            if value:
                embedding["model_name"] = value[0]
        elif key in ("token_count", "initial_embedding_text"):
            embedding[key] = value
        elif key not in parts:
            migrated[key] = value
    migrated.update(parts)
    if embedding:
        migrated["embedding"] = {**(data.get("embedding") or {}), **embedding}
    return migrated


def _loss_weight(data: dict) -> dict:
    """2 -> 3: min_snr_gamma becomes loss_weight_fn MIN_SNR_GAMMA with its strength."""
    migrated = dict(data)
    gamma = migrated.pop("min_snr_gamma", 0.0)
    if gamma:
        migrated.update(loss_weight_fn="MIN_SNR_GAMMA", loss_weight_strength=gamma)
    elif "min_snr_gamma" in data and migrated.get("model_type") in CASCADE_TYPES:
        migrated.update(loss_weight_fn="P2", loss_weight_strength=1.0)
    return migrated


def _timestep_distribution(data: dict) -> dict:
    """3 -> 4: noising_weight / noising_bias become a timestep_distribution."""
    if "noising_weight" not in data or "timestep_distribution" in data:
        return data
    migrated = dict(data)
    weight, bias = migrated.pop("noising_weight", 0.0), migrated.pop("noising_bias", 0.5)
    if weight:
        migrated.update(timestep_distribution="SIGMOID", noising_weight=weight, noising_bias=bias - 0.5)
    else:
        migrated.update(timestep_distribution="UNIFORM", noising_weight=0.0, noising_bias=0.0)
    return migrated


def _checkpointing_mode(data: dict) -> dict:
    """4 -> 5: gradient_checkpointing true/false becomes "ON"/"OFF"."""
    if not isinstance(data.get("gradient_checkpointing"), bool):
        return data
    return {**data, "gradient_checkpointing": "ON" if data["gradient_checkpointing"] else "OFF"}


def _save_every(data: dict) -> dict:
    """5 -> 6: save_after(_unit) is renamed save_every(_unit)."""
    renames = {"save_after": "save_every", "save_after_unit": "save_every_unit"}
    return {renames.get(key, key): value for key, value in data.items()}


def _layer_preset_none(data: dict) -> dict:
    """6 -> 7: a null lora_layer_preset (an old bug) means "full"."""
    if "lora_layer_preset" in data and data["lora_layer_preset"] is None:
        return {**data, "lora_layer_preset": "full"}
    return data


def _layer_filter(data: dict) -> dict:
    """7 -> 8: lora_layers / lora_layer_preset / lora_layers_regex become layer_filter(_preset, _regex)."""
    renames = {"lora_layers": "layer_filter", "lora_layer_preset": "layer_filter_preset", "lora_layers_regex": "layer_filter_regex"}
    return {renames.get(key, key): value for key, value in data.items()}


def _transformer_part(data: dict) -> dict:
    """8 -> 9: outside Stable Cascade / Wuerstchen the denoiser's table is `transformer` (copied from `prior`)."""
    if data.get("model_type") in CASCADE_TYPES or "prior" not in data:
        return data
    return {**data, "transformer": copy.deepcopy(data["prior"])}


def _part_dtypes(data: dict) -> dict:
    """9 -> 10: the global weight_dtype fills each part whose weight_dtype is NONE (or absent: NONE was that
    version's default), then goes away."""
    if "weight_dtype" not in data:
        return data
    migrated = dict(data)
    global_dtype = migrated.pop("weight_dtype")
    row = MODEL_TYPES.get(migrated.get("model_type", "STABLE_DIFFUSION_15"))
    for name in ALL_PARTS:
        if name not in migrated and (row is None or name not in (*row.parts, "vae")):
            continue
        table = dict(migrated.get(name) or {})
        if table.get("weight_dtype", "NONE") == "NONE":
            table["weight_dtype"] = global_dtype
        migrated[name] = table
    return migrated


def _checkpointing_per_part(data: dict) -> dict:
    """10 -> 11: the global gradient_checkpointing / offloading settings fan out to each part."""
    if "gradient_checkpointing" not in data:
        return data
    migrated = dict(data)
    mode = migrated.pop("gradient_checkpointing")
    migrated.pop("enable_activation_offloading", None)
    migrated.pop("layer_offload_fraction", None)
    if "enable_async_offloading" in migrated:
        migrated["async_offloading"] = migrated.pop("enable_async_offloading")
    row = MODEL_TYPES.get(migrated.get("model_type", "STABLE_DIFFUSION_15"))
    for name in ALL_PARTS:
        if isinstance(migrated.get(name), dict) or (row is not None and name in row.parts):
            migrated[name] = {**(migrated.get(name) or {}), "gradient_checkpointing": mode != "OFF"}
    return migrated


def _image_and_text_caching(data: dict) -> dict:
    """11 -> 12: latent_caching becomes image_caching and text_caching; dataloader_threads is caching_threads."""
    migrated = dict(data)
    if "latent_caching" in migrated:
        caching = migrated.pop("latent_caching")
        migrated.setdefault("image_caching", caching)
        migrated.setdefault("text_caching", caching)
    if "dataloader_threads" in migrated:
        migrated["caching_threads"] = migrated.pop("dataloader_threads")
    return migrated


MIGRATIONS: dict[int, Callable[[dict], dict]] = {
    0: _optimizer_table, 1: _part_tables, 2: _loss_weight, 3: _timestep_distribution, 4: _checkpointing_mode,
    5: _save_every, 6: _layer_preset_none, 7: _layer_filter, 8: _transformer_part, 9: _part_dtypes,
    10: _checkpointing_per_part, 11: _image_and_text_caching,
}
"""OneTrainer config version N -> the step to N + 1. Each step changes only the keys it finds, so a file without
`__version` can be walked from 0 whatever its age."""


def migrate(data: dict, version: int) -> dict:
    """A OneTrainer config of `version` upgraded to LATEST_VERSION, one step at a time."""
    for step in range(version, LATEST_VERSION):
        data = MIGRATIONS[step](data)
    return data


@dataclass(frozen=True)
class ModelType:
    """What a OneTrainer model_type imports as."""

    family: str
    """Our Family value (a string: some rows name families a newer tui-trainer adds)."""
    parts: tuple[str, ...]
    """OneTrainer's trainable part tables of this model type, the denoiser first."""
    inpainting: bool = False


MODEL_TYPES: dict[str, ModelType] = {
    "STABLE_DIFFUSION_15": ModelType("sd15", ("unet", "text_encoder")),
    "STABLE_DIFFUSION_15_INPAINTING": ModelType("sd15", ("unet", "text_encoder"), inpainting=True),
    "STABLE_DIFFUSION_20": ModelType("sd2", ("unet", "text_encoder")),
    "STABLE_DIFFUSION_20_BASE": ModelType("sd2", ("unet", "text_encoder")),
    "STABLE_DIFFUSION_20_INPAINTING": ModelType("sd2", ("unet", "text_encoder"), inpainting=True),
    "STABLE_DIFFUSION_21": ModelType("sd2", ("unet", "text_encoder")),
    "STABLE_DIFFUSION_21_BASE": ModelType("sd2", ("unet", "text_encoder")),
    "STABLE_DIFFUSION_XL_10_BASE": ModelType("sdxl", ("unet", "text_encoder", "text_encoder_2")),
    "STABLE_DIFFUSION_XL_10_BASE_INPAINTING": ModelType("sdxl", ("unet", "text_encoder", "text_encoder_2"), inpainting=True),
    "PIXART_ALPHA": ModelType("pixart_alpha", ("transformer", "text_encoder")),
    "STABLE_CASCADE_1": ModelType("stable_cascade", ("prior", "text_encoder")),
    "FLUX_DEV_1": ModelType("flux1_dev", ("transformer", "text_encoder", "text_encoder_2")),
    "CHROMA_1": ModelType("chroma", ("transformer", "text_encoder")),
}
"""OneTrainer model_type -> family; other model types are not importable."""

PART_TABLES = {"unet": "denoiser", "prior": "denoiser", "transformer": "denoiser",
               "text_encoder": "text_encoder", "text_encoder_2": "text_encoder_2"}
"""OneTrainer part table -> our [parts.*] table."""

METHODS = {"LORA": "lora", "EMBEDDING": "embedding", "FINE_TUNE": "finetune"}
WEIGHT_DTYPES = {"FLOAT_32": "float32", "FLOAT_16": "float16", "BFLOAT_16": "bfloat16", "FLOAT_8": "float8",
                 "NFLOAT_4": "nf4", "TFLOAT_32": "float32"}
TRAIN_DTYPES = {"FLOAT_32": "float32", "FLOAT_16": "float16", "BFLOAT_16": "bfloat16", "TFLOAT_32": "tf32"}
OPTIMIZERS = {"ADAMW": "adamw", "ADAMW_8BIT": "adamw8bit", "ADAFACTOR": "adafactor", "PRODIGY": "prodigy",
              "LION": "lion", "LION_8BIT": "lion8bit", "SGD": "sgd", "SCHEDULE_FREE_ADAMW": "schedule_free_adamw"}
OPTIMIZER_SETTINGS = ("beta1", "beta2", "eps", "weight_decay", "d_coef", "use_bias_correction", "safeguard_warmup",
                      "relative_step", "scale_parameter", "warmup_init", "momentum", "nesterov")
"""OneTrainer optimizer settings with the same name and meaning in our [optimizer.settings.*] tables."""
SCHEDULERS = {"CONSTANT": ("constant", ""), "LINEAR": ("linear", ""), "COSINE": ("cosine", ""),
              "COSINE_WITH_RESTARTS": ("cosine_with_restarts", ""),
              "COSINE_WITH_HARD_RESTARTS": ("cosine_with_restarts", "hard restarts become diffusers' cosine_with_restarts"),
              "ADAFACTOR": ("adafactor", ""),
              "REX": ("linear", "REX has no equivalent; imported as linear decay, the closest"),
              "CUSTOM": ("constant", "a custom scheduler class cannot be imported; imported as constant")}
CADENCE_UNITS = {"EPOCH": ("epochs", 1.0), "STEP": ("steps", 1.0), "MINUTE": ("minutes", 1.0),
                 "HOUR": ("minutes", 60.0), "SECOND": ("minutes", 1 / 60)}
"""OneTrainer time unit -> (our cadence unit, units per OneTrainer unit)."""
TRAIN_FOR_UNITS = {"EPOCH": "epochs", "STEP": "steps", "NEVER": "always"}
"""stop_training_after_unit -> our train_for_unit (OneTrainer's NEVER = never stop = the whole run)."""
PEFT_TYPES = {"LORA": "lora", "LOHA": "loha", "LOKR": "lokr"}
LAYER_PRESETS = {"full": "full", "attn-mlp": "attention+mlp", "attn-only": "attention"}
ATTENTION = {"SDP": "sdpa", "DEFAULT": "sdpa", "XFORMERS": "xformers", "FLASH": "sdpa"}
SAMPLERS = {"DDIM": "ddim", "EULER": "euler", "EULER_A": "euler_a", "DPMPP": "dpmpp_2m", "DPMPP_SDE": "dpmpp_sde",
            "UNIPC": "unipc", "EULER_KARRAS": "euler", "DPMPP_KARRAS": "dpmpp_2m", "DPMPP_SDE_KARRAS": "dpmpp_sde",
            "UNIPC_KARRAS": "unipc"}
PROMPT_SOURCES = {"sample": "txt", "concept": "prompts_file", "filename": "filename"}
LORA_FORMATS = {"SAFETENSORS": "kohya", "LEGACY_LORA": "kohya", "KOHYA_LORA": "kohya", "DIFFUSERS_LORA": "diffusers",
                "DIFFUSERS": "diffusers"}
MODEL_FORMATS = {"SAFETENSORS": "single_file", "LEGACY_SAFETENSORS": "single_file", "COMFY_SAFETENSORS": "single_file",
                 "DIFFUSERS": "diffusers"}
OUTPUT_FORMATS = {"lora": LORA_FORMATS, "finetune": MODEL_FORMATS, "embedding": {}, "inpaint": {**MODEL_FORMATS, **LORA_FORMATS}}
"""Per our method: OneTrainer output_model_format -> our output_format (embeddings are always a1111)."""

_PART_DEFAULTS = {"train": True, "stop_training_after": 0, "stop_training_after_unit": "NEVER", "learning_rate": None,
                  "weight_dtype": "FLOAT_32", "dropout_probability": 0.0, "gradient_checkpointing": True, "model_name": ""}
_TEXT_ENCODER_DEFAULTS = {**_PART_DEFAULTS, "stop_training_after": 30, "stop_training_after_unit": "EPOCH"}
DEFAULTS: dict[str, Any] = {
    "training_method": "FINE_TUNE", "model_type": "STABLE_DIFFUSION_15", "workspace_dir": "workspace/run",
    "cache_dir": "workspace-cache/run", "tensorboard": True, "base_model_name": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "output_model_format": "SAFETENSORS", "output_model_destination": "models/model.safetensors",
    "concept_file_name": "training_concepts/concepts.json", "aspect_ratio_bucketing": True, "image_caching": True,
    "text_caching": True, "learning_rate_scheduler": "CONSTANT", "learning_rate": 3e-6, "learning_rate_warmup_steps": 200.0,
    "learning_rate_cycles": 1.0, "learning_rate_min_factor": 0.0, "epochs": 100, "batch_size": 1,
    "gradient_accumulation_steps": 1, "ema": "OFF", "ema_decay": 0.999, "train_dtype": "FLOAT_16", "resolution": "512",
    "attention_mechanism": "SDP", "mse_strength": 1.0, "huber_strength": 0.0, "huber_delta": 1.0,
    "loss_weight_fn": "CONSTANT", "loss_weight_strength": 5.0, "dropout_probability": 0.0, "clip_grad_norm": 1.0,
    "offset_noise_weight": 0.0, "rescale_noise_scheduler_to_zero_terminal_snr": False, "force_v_prediction": False,
    "force_epsilon_prediction": False, "masked_training": False, "unmasked_probability": 0.1, "unmasked_weight": 0.1,
    "normalize_masked_area_loss": False, "layer_filter": "", "layer_filter_preset": "full", "peft_type": "LORA",
    "lora_rank": 16, "lora_alpha": 1.0, "embedding.placeholder": "<embedding>", "embedding.token_count": 1,
    "embedding.initial_embedding_text": "*", "optimizer.optimizer": "ADAMW",
    "sample_definition_file_name": "training_samples/samples.json", "sample_after": 10, "sample_after_unit": "MINUTE",
    "backup_after": 30, "backup_after_unit": "MINUTE", "rolling_backup": False, "rolling_backup_count": 3,
    "backup_before_save": True, "save_every": 0, "save_every_unit": "NEVER", "save_filename_prefix": "",
    "vae.weight_dtype": "FLOAT_32", "vae.model_name": "",
    **{f"{name}.{key}": value for name in ("unet", "prior", "transformer") for key, value in _PART_DEFAULTS.items()},
    **{f"{name}.{key}": value for name in ("text_encoder", "text_encoder_2") for key, value in _TEXT_ENCODER_DEFAULTS.items()},
}
"""OneTrainer's defaults (TrainConfig.default_values, config version 12) of the keys we import."""

CONCEPT_DEFAULTS: dict[str, Any] = {
    "name": "", "path": "", "enabled": True, "validation_concept": False, "include_subdirectories": False,
    "balancing": 1.0, "balancing_strategy": "REPEATS", "image.enable_crop_jitter": True,
    "image.enable_random_flip": True, "image.enable_fixed_flip": False, "image.enable_resolution_override": False,
    "image.resolution_override": "512", "text.prompt_source": "sample", "text.prompt_path": "",
    "text.enable_tag_shuffling": False, "text.keep_tags_count": 1, "text.tag_dropout_enable": False,
    "text.tag_dropout_probability": 0.0,
}
"""OneTrainer's concept defaults (ConceptConfig.default_values) of the keys we import."""

SAMPLE_DEFAULTS: dict[str, Any] = {"enabled": True, "prompt": "", "negative_prompt": "", "height": 512, "width": 512,
                                   "seed": 42, "random_seed": False, "diffusion_steps": 20, "cfg_scale": 7.0,
                                   "noise_scheduler": "DDIM"}
"""OneTrainer's sample defaults (SampleConfig.default_values) of the keys we import."""


def looks_like(document: Any) -> bool:
    """Whether a parsed JSON document is a OneTrainer training config or preset."""
    return isinstance(document, dict) and (
        "__version" in document or "training_method" in document or "model_type" in document
        or ("base_model_name" in document and "LoRA_type" not in document))


def source_version(document: dict, path: Path) -> int:
    """The config version to migrate from: `__version`, else 0 (each step then changes only the keys it finds)."""
    version = document.get("__version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise ConfigError([ConfigProblem(str(path), "__version", f"{version!r} is not a OneTrainer config version; expected 0 to {LATEST_VERSION}")])
    if version > LATEST_VERSION:
        raise ConfigError([ConfigProblem(str(path), "__version",
                                         f"{version} is newer than the OneTrainer config versions this tui-trainer knows (0 to {LATEST_VERSION}); "
                                         "save it from that OneTrainer as an older version or upgrade tui-trainer")])
    return version


def convert(path: Path, document: dict) -> tuple[TrainConfig, ImportReport]:
    """A OneTrainer config (any version, full or sparse) as our config, with the import report."""
    version = source_version(document, path)
    migrated = migrate({key: value for key, value in document.items() if key != "__version"}, version)
    embeddings = migrated.get("embeddings")
    if isinstance(embeddings, list) and embeddings and "embedding" not in migrated:
        # Configs of versions 1 to 7 list embeddings; today's OneTrainer reads the first as `embedding`.
        migrated = {**{k: v for k, v in migrated.items() if k != "embeddings"}, "embedding": embeddings[0]}
    kind = f"OneTrainer config, version {version}" if "__version" in document else "OneTrainer preset (no __version)"
    values = flatten({key: value for key, value in migrated.items() if key not in ("concepts", "samples")})
    conversion = Conversion(path, kind, values, DEFAULTS)
    model_type = _model(conversion)
    method = _method(conversion, model_type)
    _parts(conversion, model_type, method)
    _training(conversion)
    _optimizer(conversion)
    _scheduler(conversion)
    _method_settings(conversion, method)
    _cadences(conversion)
    _workspace(conversion, method)
    _concepts(conversion, migrated.get("concepts"), float(conversion.get("text_encoder.dropout_probability") or 0.0))
    _samples(conversion, migrated.get("samples"))
    for key in conversion.values:
        part = key.split(".")[0]
        if part in ALL_PARTS and part not in (*model_type.parts, "vae") and key not in conversion.read:
            conversion.unsupported(key, f"{conversion.get('model_type')} has no {part}")
    conversion.leftovers()
    return conversion.finish(), conversion.report


def _model(conversion: Conversion) -> ModelType:
    name = conversion.get("model_type")
    row = MODEL_TYPES.get(name)
    if row is None:
        raise ConfigError([ConfigProblem(str(conversion.source), "model_type",
                                         f"{name!r} cannot be imported; importable: {', '.join(MODEL_TYPES)}")])
    if row.family not in Family._value2member_map_:
        raise ConfigError([ConfigProblem(str(conversion.source), "model_type",
                                         f"{name!r} imports as family {row.family!r}, which this tui-trainer does not have yet")])
    conversion.put("model_type", "model.family", row.family)
    conversion.put("base_model_name", "model.base_model", conversion.path(conversion.get("base_model_name"), model=True))
    if conversion.given("vae.model_name"):
        conversion.put("vae.model_name", "model.vae", conversion.path(conversion.get("vae.model_name"), model=True))
    conversion.put("vae.weight_dtype", "model.vae_dtype", conversion.choose("vae.weight_dtype", WEIGHT_DTYPES, "dtype"))
    conversion.put("train_dtype", "model.train_dtype", conversion.choose("train_dtype", TRAIN_DTYPES, "train dtype"))
    if conversion.get("force_v_prediction"):
        conversion.put("force_v_prediction", "model.prediction_type", "v_prediction")
    elif conversion.get("force_epsilon_prediction"):
        conversion.put("force_epsilon_prediction", "model.prediction_type", "epsilon")
    conversion.put("rescale_noise_scheduler_to_zero_terminal_snr", "model.zero_terminal_snr",
                   bool(conversion.get("rescale_noise_scheduler_to_zero_terminal_snr")))
    if row.family == "stable_cascade":
        for key, target in (("effnet_encoder.model_name", "model.effnet_encoder"), ("decoder.model_name", "model.cascade_decoder")):
            if conversion.given(key):
                conversion.put(key, target, conversion.path(conversion.get(key), model=True))
    return row


def _method(conversion: Conversion, model_type: ModelType) -> str:
    method = conversion.choose("training_method", METHODS, "training method")
    if method is None:
        raise ConfigError([ConfigProblem(str(conversion.source), "training_method",
                                         f"{conversion.get('training_method')!r} cannot be imported; importable: {', '.join(METHODS)}")])
    if model_type.inpainting:
        if method == "embedding":
            raise ConfigError([ConfigProblem(str(conversion.source), "training_method",
                                             "embeddings of an inpainting model cannot be imported; importable: LORA, FINE_TUNE")])
        conversion.put("training_method", "method", "inpaint", note=f"an inpainting model_type trains as inpaint ({method})")
        return "inpaint"
    conversion.put("training_method", "method", method)
    return method


def _parts(conversion: Conversion, model_type: ModelType, method: str) -> None:
    denoiser = model_type.parts[0]
    for name in model_type.parts:
        table = f"parts.{PART_TABLES[name]}"
        dtype = conversion.choose(f"{name}.weight_dtype", WEIGHT_DTYPES, "dtype")
        if method == "embedding" and name.startswith("text_encoder") and dtype not in ("float32", "bfloat16"):
            conversion.warn(f"{name}.weight_dtype: embedding rows train in float32 or bfloat16; imported as float32")
            dtype = "float32"
        conversion.put(f"{name}.weight_dtype", f"{table}.dtype", dtype)
        train = bool(conversion.get(f"{name}.train"))
        if method == "embedding":
            conversion.unsupported(f"{name}.train", "an embedding trains only its new token rows")
            continue
        conversion.put(f"{name}.train", f"{table}.train", train)
        rate = conversion.get(f"{name}.learning_rate")
        conversion.put(f"{name}.learning_rate", f"{table}.learning_rate", rate,
                       note="" if rate is not None else "absent: the part uses optimizer.learning_rate")
        unit = conversion.get(f"{name}.stop_training_after_unit")
        after = conversion.get(f"{name}.stop_training_after") or 0
        ours = TRAIN_FOR_UNITS.get(unit)
        if ours is None:
            conversion.unsupported(f"{name}.stop_training_after_unit",
                                   f"stopping after {unit} has no tui-trainer equivalent (epochs, steps or never); it trains the whole run")
            ours = "always"
        conversion.put(f"{name}.stop_training_after_unit", f"{table}.train_for_unit", ours)
        if ours in ("epochs", "steps"):
            conversion.put(f"{name}.stop_training_after", f"{table}.train_for", int(after))
        else:
            conversion.unsupported(f"{name}.stop_training_after", "unused: the part trains the whole run")
    conversion.put(f"{denoiser}.gradient_checkpointing", "training.gradient_checkpointing",
                   bool(conversion.get(f"{denoiser}.gradient_checkpointing")))


def _training(conversion: Conversion) -> None:
    resolution = str(conversion.get("resolution")).replace(" ", "")
    try:
        parse_resolution(resolution)
    except ValueError as error:
        conversion.unsupported("resolution", f"{error}; training.resolution keeps its default")
    else:
        conversion.put("resolution", "training.resolution", resolution)
    for key, target in (("batch_size", "training.batch_size"), ("gradient_accumulation_steps", "training.gradient_accumulation"),
                        ("epochs", "training.epochs")):
        conversion.put(key, target, int(conversion.get(key)))
    if not conversion.get("aspect_ratio_bucketing"):
        conversion.unsupported("aspect_ratio_bucketing", "tui-trainer always buckets by aspect ratio")
    conversion.put("image_caching", "training.cache_latents", bool(conversion.get("image_caching")))
    conversion.put("text_caching", "training.cache_text_encoder_outputs", bool(conversion.get("text_caching")),
                   note="tui-trainer caches text-encoder outputs only while no text encoder trains")
    conversion.put("ema", "training.ema", conversion.get("ema") != "OFF")
    conversion.put("ema_decay", "training.ema_decay", float(conversion.get("ema_decay")))
    conversion.put("clip_grad_norm", "training.clip_grad_norm", conversion.get("clip_grad_norm"),
                   note="" if conversion.get("clip_grad_norm") is not None else "OneTrainer's none (no clipping) cannot be written; tui-trainer clips at 1.0")
    conversion.put("offset_noise_weight", "training.offset_noise", float(conversion.get("offset_noise_weight")))
    conversion.put("attention_mechanism", "training.attention", conversion.choose("attention_mechanism", ATTENTION, "attention"))
    conversion.put("tensorboard", "training.tensorboard", bool(conversion.get("tensorboard")))
    if conversion.get("loss_weight_fn") == "MIN_SNR_GAMMA":
        conversion.put("loss_weight_strength", "training.min_snr_gamma", float(conversion.get("loss_weight_strength")))
        conversion.put("loss_weight_fn", "training.min_snr_gamma", float(conversion.get("loss_weight_strength")))
    elif conversion.get("loss_weight_fn") != "CONSTANT":
        conversion.unsupported("loss_weight_fn", f"loss weighting {conversion.get('loss_weight_fn')} has no equivalent; the loss is unweighted")
        conversion.unsupported("loss_weight_strength", "unused without MIN_SNR_GAMMA")
    else:
        conversion.unsupported("loss_weight_strength", "unused without MIN_SNR_GAMMA")
    huber, mse = conversion.get("huber_strength") or 0.0, conversion.get("mse_strength")
    if huber and not mse:
        conversion.put("huber_strength", "training.loss", "huber")
        conversion.put("huber_delta", "training.huber_delta", float(conversion.get("huber_delta")))
    else:
        conversion.put("mse_strength", "training.loss", "mse")
        if huber:
            conversion.unsupported("huber_strength", "a mix of MSE and Huber loss has no equivalent; imported as MSE")
    for key, target in (("masked_training", "training.masked_training"), ("normalize_masked_area_loss", "training.normalize_masked_area")):
        conversion.put(key, target, bool(conversion.get(key)))
    for key, target in (("unmasked_probability", "training.unmasked_probability"), ("unmasked_weight", "training.unmasked_weight")):
        conversion.put(key, target, float(conversion.get(key)))


def _optimizer(conversion: Conversion) -> None:
    name = conversion.choose("optimizer.optimizer", OPTIMIZERS, "optimizer")
    if name is None:
        conversion.warn(f"optimizer {conversion.get('optimizer.optimizer')!r} has no equivalent; imported as adamw with its defaults")
        name = "adamw"
    conversion.put("optimizer.optimizer", "optimizer.name", name)
    conversion.put("learning_rate", "optimizer.learning_rate", float(conversion.get("learning_rate")))
    known = OUR_OPTIMIZER_SETTINGS[OptimizerName(name)].model_fields
    for setting in OPTIMIZER_SETTINGS:
        key = f"optimizer.{setting}"
        value = conversion.get(key)
        if setting in known and value is not None:
            conversion.put(key, f"optimizer.settings.{name}.{setting}", value)
    for key in [key for key in conversion.values if key.startswith("optimizer.") and key not in conversion.read]:
        conversion.unsupported(key, f"{name} has no setting {key.removeprefix('optimizer.')!r} here")
    for key in [key for key in conversion.values if key.startswith("optimizer_defaults.")]:
        conversion.unsupported(key, "only the chosen optimizer's settings are imported")


def _scheduler(conversion: Conversion) -> None:
    name, note = SCHEDULERS.get(conversion.get("learning_rate_scheduler"), (None, ""))
    if name is None:
        conversion.choose("learning_rate_scheduler", SCHEDULERS, "scheduler")
        name = "constant"
    if note:
        conversion.warn(f"learning_rate_scheduler: {note}")
    conversion.put("learning_rate_scheduler", "scheduler.name", name, note=note)
    warmup = float(conversion.get("learning_rate_warmup_steps") or 0)
    conversion.put("learning_rate_warmup_steps", "scheduler.warmup", warmup if 0 < warmup < 1 else int(round(warmup)))
    conversion.put("learning_rate_cycles", "scheduler.cycles", max(1, int(round(float(conversion.get("learning_rate_cycles"))))))
    conversion.put("learning_rate_min_factor", "scheduler.min_lr_factor", float(conversion.get("learning_rate_min_factor")))


def _method_settings(conversion: Conversion, method: str) -> None:
    if method in ("lora", "inpaint"):
        peft = conversion.choose("peft_type", PEFT_TYPES, "adapter type")
        conversion.put("peft_type", "lora.type", peft or "lora")
        conversion.put("lora_rank", "lora.rank", int(conversion.get("lora_rank")))
        conversion.put("lora_alpha", "lora.alpha", float(conversion.get("lora_alpha")))
        conversion.put("dropout_probability", "lora.dropout", float(conversion.get("dropout_probability")))
        if conversion.get("layer_filter") and conversion.get("layer_filter_preset") not in LAYER_PRESETS:
            conversion.unsupported("layer_filter", "a custom layer filter cannot be imported; lora.targets = full")
        preset = LAYER_PRESETS.get(conversion.get("layer_filter_preset"), "full")
        conversion.put("layer_filter_preset", "lora.targets", preset)
    if method == "embedding":
        placeholder = str(conversion.get("embedding.placeholder")).replace(" ", "")
        conversion.put("embedding.placeholder", "embedding.placeholder_token", placeholder or "<embedding>")
        conversion.put("embedding.token_count", "embedding.num_vectors", int(conversion.get("embedding.token_count") or 1))
        conversion.put("embedding.initial_embedding_text", "embedding.init_text",
                       conversion.get("embedding.initial_embedding_text") or "*")


def _cadence(conversion: Conversion, key: str, section: str) -> None:
    every, unit = conversion.get(key), conversion.get(f"{key}_unit")
    if unit == "NEVER" or not every:
        conversion.put(key, f"{section}.every", 0)
        conversion.put(f"{key}_unit", f"{section}.unit", None)
        return
    if unit == "ALWAYS":
        conversion.warn(f"{key}_unit ALWAYS: imported as every step")
        ours, factor = "steps", 1.0
    else:
        ours, factor = CADENCE_UNITS.get(unit, ("minutes", 1.0))
    count = max(1, int(round(float(every) * factor)))
    if factor != 1.0:
        conversion.warn(f"{key}: {every} {unit.lower()}s imported as {count} minutes")
    conversion.put(key, f"{section}.every", count)
    conversion.put(f"{key}_unit", f"{section}.unit", ours)


def _cadences(conversion: Conversion) -> None:
    _cadence(conversion, "sample_after", "sampling")
    _cadence(conversion, "backup_after", "backup")
    _cadence(conversion, "save_every", "save")
    rolling = bool(conversion.get("rolling_backup"))
    conversion.put("rolling_backup_count" if rolling else "rolling_backup", "backup.rolling_count",
                   int(conversion.get("rolling_backup_count")) if rolling else 1000,
                   note="" if rolling else "OneTrainer keeps every backup; tui-trainer keeps the newest 1000")
    conversion.put("backup_before_save", "backup.before_save", bool(conversion.get("backup_before_save")))
    conversion.put("save_filename_prefix", "save.filename_prefix", safe_name(str(conversion.get("save_filename_prefix")), ""))


def _workspace(conversion: Conversion, method: str) -> None:
    conversion.put("workspace_dir", "workspace.dir", conversion.path(conversion.get("workspace_dir")))
    conversion.put("cache_dir", "workspace.cache_dir", conversion.path(conversion.get("cache_dir")))
    conversion.document.setdefault("workspace", {})["run_name"] = safe_name(conversion.source.stem)
    destination = Path(conversion.path(conversion.get("output_model_destination")))
    folder = destination.parent if destination.suffix else destination
    conversion.put("output_model_destination", "workspace.output_path", str(folder),
                   note=f"a folder; the file name is tui-trainer's ({destination.name} was OneTrainer's)")
    formats = OUTPUT_FORMATS[method]
    if formats:
        conversion.put("output_model_format", "workspace.output_format",
                       conversion.choose("output_model_format", formats, "output format"))
    else:
        conversion.put("output_model_format", "workspace.output_format", "a1111")


def _load_list(conversion: Conversion, inline: Any, file_key: str, what: str) -> tuple[list, str]:
    """Inline items, else the items of the file `file_key` names (relative to the source's folder)."""
    if isinstance(inline, list):
        conversion.read.add(file_key)
        return inline, file_key.removesuffix("_file_name").removesuffix("_definition")
    path = Path(conversion.path(conversion.get(file_key)))
    conversion.read.add(file_key)
    if not path.is_file():
        conversion.warn(f"{file_key}: {what} file {str(path)!r} does not exist here; no {what}s imported")
        return [], ""
    items = read_json(path, f"a OneTrainer {what}s file (a JSON list)")
    if not isinstance(items, list):
        raise ConfigError([ConfigProblem(str(path), "", f"is not a OneTrainer {what}s file; expected a JSON list of {what}s")])
    conversion.report.files.append(str(path))
    return items, Path(path).name


def _concepts(conversion: Conversion, inline: Any, caption_dropout: float) -> None:
    """Each concept (inline, or in the concepts file) becomes a [[concepts]] table; text_encoder.dropout_probability
    (OneTrainer's caption dropout) becomes each concept's caption_dropout."""
    concepts, label = _load_list(conversion, inline, "concept_file_name", "concept")
    tables = conversion.document.setdefault("concepts", [])
    for index, raw in enumerate(concepts):
        if not isinstance(raw, dict):
            conversion.warn(f"{label}[{index}] is not a concept table; skipped")
            continue
        if "repeats" in raw and "balancing" not in raw and raw.get("__version", 0) < 1:
            raw = {("balancing" if key == "repeats" else key): value for key, value in raw.items()}
        concept = Conversion(conversion.source, "", flatten({k: v for k, v in raw.items() if k != "__version"}), CONCEPT_DEFAULTS)
        _concept(concept, conversion.path(str(concept.get("path"))), caption_dropout)
        concept.leftovers()
        target = f"concepts[{len(tables)}]"
        for entry in concept.report.keys:
            conversion.report.keys.append(KeyReport(f"{label}[{index}].{entry.key}", entry.outcome,
                                                    entry.target.replace(CONCEPT, target), entry.value, entry.note))
        for warning in concept.report.warnings:
            conversion.warn(f"{label}[{index}]: {warning}")
        table = concept.document["concept"]
        conversion.check_exists(f"{target}.path", table["path"], "concept folder")
        tables.append(table)


CONCEPT = "concept"
"""The table one concept is built in, before it becomes concepts[N]."""


def _concept(concept: Conversion, path: str, caption_dropout: float) -> None:
    prefix = CONCEPT
    concept.put("name", f"{prefix}.name", str(concept.get("name") or Path(path).name or "concept"))
    concept.put("path", f"{prefix}.path", path)
    concept.put("enabled", f"{prefix}.enabled", bool(concept.get("enabled")))
    concept.put("validation_concept", f"{prefix}.type", "validation" if concept.get("validation_concept") else "train")
    concept.put("include_subdirectories", f"{prefix}.include_subdirs", bool(concept.get("include_subdirectories")))
    if concept.get("balancing_strategy") == "REPEATS":
        concept.put("balancing", f"{prefix}.repeats", float(concept.get("balancing")),
                    note="each image counts this many times per epoch")
        concept.read.add("balancing_strategy")
    else:
        concept.unsupported("balancing_strategy", f"{concept.get('balancing_strategy')} balancing has no equivalent; repeats = 1")
        concept.unsupported("balancing", "unused without REPEATS balancing")
    flip = 1.0 if concept.get("image.enable_fixed_flip") else 0.5 if concept.get("image.enable_random_flip") else 0.0
    concept.put("image.enable_random_flip", f"{prefix}.flip_probability", flip)
    concept.read.add("image.enable_fixed_flip")
    concept.put("image.enable_crop_jitter", f"{prefix}.crop_jitter", 1.0 if concept.get("image.enable_crop_jitter") else 0.0)
    if concept.get("image.enable_resolution_override"):
        concept.put("image.resolution_override", f"{prefix}.resolution", str(concept.get("image.resolution_override")))
        concept.read.add("image.enable_resolution_override")
    else:
        concept.unsupported("image.resolution_override", "unused: enable_resolution_override is off")
    source = concept.choose("text.prompt_source", PROMPT_SOURCES, "prompt source") or "txt"
    concept.put("text.prompt_source", f"{prefix}.caption_source", source)
    if source == "prompts_file":
        concept.put("text.prompt_path", f"{prefix}.prompts_file", concept.path(str(concept.get("text.prompt_path"))))
    else:
        concept.unsupported("text.prompt_path", "unused: the prompt source is not a prompts file")
    concept.put("text.enable_tag_shuffling", f"{prefix}.shuffle_tags", bool(concept.get("text.enable_tag_shuffling")))
    concept.put("text.keep_tags_count", f"{prefix}.keep_tokens", int(concept.get("text.keep_tags_count")))
    dropout = float(concept.get("text.tag_dropout_probability")) if concept.get("text.tag_dropout_enable") else 0.0
    concept.put("text.tag_dropout_probability", f"{prefix}.tag_dropout", dropout)
    concept.read.add("text.tag_dropout_enable")
    if caption_dropout:
        concept.document[CONCEPT]["caption_dropout"] = caption_dropout


def _samples(conversion: Conversion, inline: Any) -> None:
    samples, label = _load_list(conversion, inline, "sample_definition_file_name", "sample")
    written = 0
    for index, raw in enumerate(samples):
        if not isinstance(raw, dict):
            conversion.warn(f"{label}[{index}] is not a sample table; skipped")
            continue
        sample = Conversion(conversion.source, "", flatten(raw), SAMPLE_DEFAULTS)
        key = f"{label}[{index}]"
        if not sample.get("enabled") or not str(sample.get("prompt")).strip():
            conversion.report.keys.append(KeyReport(key, Outcome.UNSUPPORTED, note="a disabled or empty sample is not imported"))
            continue
        table = {"prompt": str(sample.get("prompt")), "negative_prompt": str(sample.get("negative_prompt")),
                 "seed": abs(int(sample.get("seed"))), "steps": int(sample.get("diffusion_steps")),
                 "cfg": float(sample.get("cfg_scale")), "sampler": sample.choose("noise_scheduler", SAMPLERS, "sampler") or "euler_a"}
        for side in ("width", "height"):
            value = int(sample.get(side))
            table[side] = max(64, min(4096, value - value % 8))
        if sample.get("random_seed"):
            conversion.warn(f"{key}: random_seed has no equivalent; the sample uses seed {table['seed']}")
        conversion.document.setdefault("samples", []).append(table)
        conversion.report.keys.append(KeyReport(key, Outcome.MAPPED, f"samples[{written}]", table))
        written += 1

"""Config problems that need the family facts: a method or setting the chosen family does not have."""

from __future__ import annotations

from pathlib import Path

from tui_trainer.config import ConfigProblem, TrainConfig, check_paths
from tui_trainer.config.enums import Method, OutputFormat, PredictionType
from tui_trainer.models.families import FAMILIES, family_spec, field_applies


def family_problems(config: TrainConfig, config_file: str | Path | None = None) -> list[ConfigProblem]:
    """The method and objective settings the config's family does not have."""
    file = str(config_file or "")
    spec = family_spec(config.model.family)
    problems = []
    if config.method not in spec.methods:
        available = ", ".join(method.value for method in spec.methods)
        problems.append(ConfigProblem(file, "method", f"{config.method.value!r} is not available for {spec.label}; available: {available}"))
    forced = config.model.prediction_type
    if forced is not None and (forced is PredictionType.FLOW) != (spec.prediction_type is PredictionType.FLOW):
        problems.append(ConfigProblem(
            file, "model.prediction_type",
            f"{forced.value!r} does not fit {spec.label}, which trains {spec.prediction_type.value}; leave it unset",
        ))
    if config.model.transformer and not field_applies(config.model.family, "model.transformer"):
        problems.append(ConfigProblem(
            file, "model.transformer", f"{spec.label} does not load its denoiser from a separate file; leave it unset",
        ))
    comfyui = comfyui_format_problem(config)
    if comfyui:
        problems.append(ConfigProblem(file, "workspace.output_format", comfyui))
    return problems + offload_problems(config, file)


def offload_problems(config: TrainConfig, file: str = "") -> list[ConfigProblem]:
    """What block offload of the transformer (flow.offload) cannot do: see docs/vram.md for why."""
    if not config.flow.offload.enabled:
        return []
    spec = family_spec(config.model.family)
    key = "flow.offload.enabled"
    if not field_applies(config.model.family, key):
        return [ConfigProblem(file, key, f"{spec.label} has no block offload; it is for the flow families' transformers")]
    problems = []
    if config.method is not Method.LORA:
        problems.append(ConfigProblem(file, key, f"block offload is for method 'lora' (frozen transformer weights); "
                                      f"{config.method.value!r} trains the weights it would move: use lora, or set it to false"))
    if not config.training.gradient_checkpointing:
        problems.append(ConfigProblem(file, "training.gradient_checkpointing", "flow.offload needs it true: the backward "
                                      "reruns each block's forward, which brings the block's weights back to the GPU"))
    if config.distributed.num_processes > 1:
        problems.append(ConfigProblem(file, key, "block offload trains on one GPU here; set distributed.num_processes = 1"))
    return problems


def comfyui_format_problem(config: TrainConfig) -> str | None:
    """Why output_format 'comfyui' does not fit the config's family (None: it fits, or another format is set)."""
    spec = family_spec(config.model.family)
    if config.output_format is not OutputFormat.COMFYUI or spec.comfyui_lora_layout:
        return None
    families = ", ".join(other.label for other in FAMILIES.values() if other.comfyui_lora_layout)
    return f"'comfyui' is the LoRA layout of {families} only; {spec.label} has none here: use 'diffusers'"


def config_problems(config: TrainConfig, config_file: str | Path | None = None) -> list[ConfigProblem]:
    """Everything that stops a parsed config from training: missing paths, then what its family does not have."""
    return check_paths(config, config_file) + family_problems(config, config_file)


def load_checked_config(path: str | Path) -> TrainConfig:
    """Load a config file and raise ConfigError when it parses but cannot train (config_problems)."""
    from tui_trainer.config import ConfigError, load_config

    config = load_config(path)
    problems = config_problems(config, path)
    if problems:
        raise ConfigError(problems)
    return config

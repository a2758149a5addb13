"""Read and write config TOML files: migrations, clear errors, atomic saves."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import ValidationError

from tui_trainer.atomic import atomic_write_text
from tui_trainer.config.errors import ConfigError, ConfigProblem, problems_from_validation
from tui_trainer.config.schema import CONFIG_VERSION, TrainConfig

Migration = Callable[[dict[str, Any]], dict[str, Any]]

MIGRATIONS: dict[int, Migration] = {}
"""Version N -> function turning a version-N document into a version N+1 document."""


def migrate(document: dict[str, Any], file: str = "") -> dict[str, Any]:
    """Upgrade a raw config document to the current version, one migration at a time."""
    version = document.get("version", CONFIG_VERSION)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ConfigError([ConfigProblem(file, "version", f"{version!r} has the wrong type; expected an integer")])
    if version > CONFIG_VERSION:
        raise ConfigError(
            [ConfigProblem(file, "version", f"{version} is newer than this tui-trainer reads ({CONFIG_VERSION}); upgrade tui-trainer")]
        )
    while version < CONFIG_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise ConfigError([ConfigProblem(file, "version", f"no migration from version {version}; allowed: 1 to {CONFIG_VERSION}")])
        document = step(dict(document))
        version += 1
        document["version"] = version
    return document


def parse_config(text: str, file: str = "") -> TrainConfig:
    """Parse TOML text into a validated TrainConfig; raise ConfigError naming `file`."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([ConfigProblem(file, "", f"TOML syntax error: {error}")]) from None
    return config_from_dict(migrate(document, file), file)


def config_from_dict(document: dict[str, Any], file: str = "") -> TrainConfig:
    """Validate a (current-version) document; raise ConfigError naming `file`."""
    try:
        return TrainConfig.model_validate(document)
    except ValidationError as error:
        raise ConfigError(problems_from_validation(TrainConfig, error, file)) from None


def load_config(path: str | Path) -> TrainConfig:
    """Load and validate a config file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError([ConfigProblem(str(path), "", f"cannot read: {error.strerror or error}")]) from None
    except UnicodeDecodeError:
        raise ConfigError([ConfigProblem(str(path), "", "is not UTF-8 text")]) from None
    return parse_config(text, str(path))


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """Plain TOML-ready dict of a config; unset (None) keys are left out."""
    return config.model_dump(mode="json", exclude_none=True)


def dump_config(config: TrainConfig) -> str:
    """TOML text of a config."""
    return tomli_w.dumps(config_to_dict(config))


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Save a config atomically (temp file + rename)."""
    atomic_write_text(path, dump_config(config))


def resolve_path(config_file: str | Path | None, value: str) -> Path:
    """A path from the config, made absolute against the config file's folder."""
    candidate = Path(value).expanduser()
    if candidate.is_absolute() or config_file is None:
        return candidate
    return Path(config_file).resolve().parent / candidate


def _looks_local(value: str) -> bool:
    return value.startswith((".", "/", "~")) or value.endswith((".safetensors", ".ckpt", ".pt", ".bin"))


MODEL_PATHS = ("base_model", "vae", "effnet_encoder", "cascade_decoder")
"""model.* keys that name a model file or folder (a local path, else a hub repo id)."""


def with_absolute_paths(config: TrainConfig, config_file: str | Path | None) -> TrainConfig:
    """A copy of `config` whose relative paths are made absolute against the config file's folder.

    A run folder keeps its own copy of the config; absolute paths keep that copy valid there.
    """
    if config_file is None:
        return config
    document = config.model_dump()

    def absolute(value: str | None, local_only: bool = False) -> str | None:
        if value is None or (local_only and not (_looks_local(value) or resolve_path(config_file, value).exists())):
            return value
        return str(resolve_path(config_file, value))

    workspace = document["workspace"]
    for key in ("dir", "cache_dir", "output_path"):
        workspace[key] = absolute(workspace[key])
    for concept in document["concepts"]:
        concept["path"] = absolute(concept["path"])
        concept["prompts_file"] = absolute(concept["prompts_file"])
    for key in MODEL_PATHS:
        document["model"][key] = absolute(document["model"][key], local_only=True)
    return TrainConfig.model_validate(document)


def check_paths(config: TrainConfig, config_file: str | Path | None) -> list[ConfigProblem]:
    """Problems with paths the config names (missing concept folders, prompt files, local models)."""
    file = str(config_file) if config_file else ""
    problems: list[ConfigProblem] = []
    for index, concept in enumerate(config.concepts):
        if not concept.enabled:
            continue
        folder = resolve_path(config_file, concept.path)
        if not folder.is_dir():
            problems.append(
                ConfigProblem(file, f"concepts[{index}].path", f"folder {str(folder)!r} of concept {concept.name!r} does not exist")
            )
        if concept.prompts_file and not resolve_path(config_file, concept.prompts_file).is_file():
            problems.append(
                ConfigProblem(file, f"concepts[{index}].prompts_file", f"file {concept.prompts_file!r} does not exist")
            )
    model = config.model
    for key in MODEL_PATHS:
        value = getattr(model, key)
        if value and _looks_local(value) and not resolve_path(config_file, value).exists():
            problems.append(ConfigProblem(file, f"model.{key}", f"{value!r} does not exist"))
    return problems


def validate_file(path: str | Path) -> tuple[TrainConfig, list[ConfigProblem]]:
    """Load a config and check its paths; raise ConfigError if it does not parse."""
    config = load_config(path)
    return config, check_paths(config, path)

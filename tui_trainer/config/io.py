"""Read and write config TOML files: migrations, clear errors, atomic saves."""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import ValidationError

from tui_trainer.atomic import atomic_write_text
from tui_trainer.config.errors import ConfigError, ConfigProblem, problems_from_validation
from tui_trainer.config.schema import CONFIG_VERSION, TrainConfig

Migration = Callable[[dict[str, Any]], list[str]]
"""Turns a version-N document into version N+1 in place; returns what it changed, one line per change."""

PART_TABLES_V1 = {"unet": "denoiser", "text_encoder": "text_encoder", "text_encoder_2": "text_encoder_2"}
"""Version 1's part tables -> their [parts.*] table."""
PART_DTYPES_V1 = {"unet_dtype": ("denoiser",), "text_encoder_dtype": ("text_encoder", "text_encoder_2")}
"""Version 1's model.*_dtype keys -> the parts whose dtype they set."""


def parts_as_tables(document: dict[str, Any]) -> list[str]:
    """Version 1 -> 2: [unet] / [text_encoder] / [text_encoder_2] and model.unet_dtype / text_encoder_dtype become
    [parts.denoiser] / [parts.text_encoder] / [parts.text_encoder_2] tables with their dtype."""
    parts = document.get("parts", {})
    if not isinstance(parts, dict):
        return []
    notes = []
    for old, new in PART_TABLES_V1.items():
        if old in document:
            table = document.pop(old)
            parts[new] = {**table, **parts.get(new, {})} if isinstance(table, dict) else table
            notes.append(f"[{old}] -> [parts.{new}]")
    model = document.get("model")
    for old, news in PART_DTYPES_V1.items():
        if isinstance(model, dict) and old in model:
            value = model.pop(old)
            for new in news:
                table = parts.setdefault(new, {})
                if isinstance(table, dict):
                    table.setdefault("dtype", value)
            notes.append(f"model.{old} -> " + ", ".join(f"parts.{new}.dtype" for new in news))
    if parts:
        document["parts"] = parts
    return notes


MIGRATIONS: dict[int, Migration] = {1: parts_as_tables}
"""Version N -> the migration turning a version-N document into a version N+1 document."""

FIRST_VERSION = 1
"""The version of a document that names none (hand-written files; every file tui-trainer writes names its version)."""


@dataclass(frozen=True)
class MigratedDocument:
    """A raw config document upgraded to the current version, and what the upgrade changed."""

    document: dict[str, Any]
    changes: list[str]
    from_version: int


def migrate(document: dict[str, Any], file: str = "") -> MigratedDocument:
    """Upgrade a raw config document to the current version, one migration at a time (the input is not changed)."""
    version = document.get("version", FIRST_VERSION)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ConfigError([ConfigProblem(file, "version", f"{version!r} has the wrong type; expected an integer")])
    if version > CONFIG_VERSION:
        raise ConfigError(
            [ConfigProblem(file, "version", f"{version} is newer than this tui-trainer reads ({CONFIG_VERSION}); upgrade tui-trainer")]
        )
    start, document, changes = version, copy.deepcopy(document), []
    while version < CONFIG_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise ConfigError([ConfigProblem(file, "version", f"no migration from version {version}; allowed: 1 to {CONFIG_VERSION}")])
        changes += step(document)
        version += 1
        document["version"] = version
    return MigratedDocument(document, changes, start)


def parse_config_migrated(text: str, file: str = "") -> tuple[TrainConfig, MigratedDocument]:
    """Parse TOML text into a validated TrainConfig, with what upgrading it to the current version changed."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([ConfigProblem(file, "", f"TOML syntax error: {error}")]) from None
    migrated = migrate(document, file)
    return _validate(migrated, file), migrated


def _as_written(problem: ConfigProblem, migrated: MigratedDocument) -> ConfigProblem:
    """A problem of a migrated key, saying where the file wrote it ('... (written as [unet] in this version 1 file)')."""
    for change in migrated.changes:
        old, new = change.split(" -> ")
        for target in new.split(", "):
            if problem.key == target.strip("[]") or problem.key.startswith(target.strip("[]") + "."):
                where = f"written as {old} in this version {migrated.from_version} file"
                return ConfigProblem(problem.file, problem.key, f"{problem.message} ({where})")
    return problem


def parse_config(text: str, file: str = "") -> TrainConfig:
    """Parse TOML text (of any version this tui-trainer reads) into a validated TrainConfig; raise ConfigError naming `file`."""
    return parse_config_migrated(text, file)[0]


def config_from_dict(document: dict[str, Any], file: str = "") -> TrainConfig:
    """Validate a raw document of any version this tui-trainer reads (migrated first); raise ConfigError naming `file`."""
    return _validate(migrate(document, file), file)


def _validate(migrated: MigratedDocument, file: str) -> TrainConfig:
    try:
        return TrainConfig.model_validate(migrated.document)
    except ValidationError as error:
        problems = problems_from_validation(TrainConfig, error, file)
        raise ConfigError([_as_written(problem, migrated) for problem in problems]) from None


def load_config(path: str | Path) -> TrainConfig:
    """Load and validate a config file."""
    return load_config_migrated(path)[0]


def load_config_migrated(path: str | Path) -> tuple[TrainConfig, MigratedDocument]:
    """Load and validate a config file, with what upgrading it to the current version changed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError([ConfigProblem(str(path), "", f"cannot read: {error.strerror or error}")]) from None
    except UnicodeDecodeError:
        raise ConfigError([ConfigProblem(str(path), "", "is not UTF-8 text")]) from None
    return parse_config_migrated(text, str(path))


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """Plain TOML-ready dict of a config; unset (None) keys are left out."""
    return config.model_dump(mode="json", exclude_none=True)


def dump_config(config: TrainConfig) -> str:
    """TOML text of a config."""
    return tomli_w.dumps(config_to_dict(config))


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Save a config atomically (temp file + rename)."""
    atomic_write_text(path, dump_config(config))


PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
SAFE_SUFFIXES = (".safetensors", ".sft")
"""Suffixes of a single-file checkpoint: pickled (torch.load) and safetensors."""


def is_single_file(value: str) -> bool:
    """Whether a model setting names one checkpoint file (not a diffusers folder or a repo id)."""
    return value.lower().endswith(SAFE_SUFFIXES + PICKLE_SUFFIXES)


def resolve_path(config_file: str | Path | None, value: str) -> Path:
    """A path from the config, made absolute against the config file's folder."""
    candidate = Path(value).expanduser()
    if candidate.is_absolute() or config_file is None:
        return candidate
    return Path(config_file).resolve().parent / candidate


def _looks_local(value: str) -> bool:
    return value.startswith((".", "/", "~")) or value.endswith((".safetensors", ".ckpt", ".pt", ".bin"))


MODEL_PATHS = ("base_model", "vae", "transformer", "effnet_encoder", "cascade_decoder")
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


def validate_file(path: str | Path) -> tuple[TrainConfig, list[ConfigProblem], MigratedDocument]:
    """Load a config and check its paths (and say what upgrading it changed); raise ConfigError if it does not parse."""
    config, migrated = load_config_migrated(path)
    return config, check_paths(config, path), migrated

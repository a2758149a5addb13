"""Import other trainers' configs (OneTrainer, kohya sd-scripts, kohya_ss GUI) as tui-trainer configs.

`import_file(path)` detects the source, converts it and returns the config with a report of every source key.
One module per source; SOURCES is the registry the detection walks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tui_trainer.config.errors import ConfigError, ConfigProblem
from tui_trainer.config.importing import kohya, kohya_ss, onetrainer
from tui_trainer.config.importing.conversion import read_json, read_toml
from tui_trainer.config.importing.report import ImportReport, KeyReport, Outcome
from tui_trainer.config.schema import TrainConfig

__all__ = ["ImportReport", "ImportResult", "KeyReport", "Outcome", "SOURCES", "import_file", "is_importable"]


@dataclass(frozen=True)
class ImportResult:
    """A converted config and its report."""

    config: TrainConfig
    report: ImportReport


@dataclass(frozen=True)
class Source:
    """One kind of file we import: how to recognise a parsed document, and its converter."""

    name: str
    format: str
    """json or toml."""
    looks_like: Callable[[Any], bool]
    convert: Callable[[Path, Any], tuple[TrainConfig, ImportReport]]


SOURCES: tuple[Source, ...] = (
    Source("kohya_ss GUI config", "json", kohya_ss.looks_like, kohya_ss.convert),
    Source("OneTrainer config", "json", onetrainer.looks_like, onetrainer.convert),
    Source("kohya sd-scripts training config", "toml", kohya.looks_like_training, kohya.convert_training),
    Source("kohya sd-scripts dataset config", "toml", kohya.looks_like_dataset, kohya.convert_dataset),
)
"""The sources, in the order detection tries them."""

EXPECTED = ("a OneTrainer config or preset (.json), a kohya_ss GUI config (.json), or a kohya sd-scripts training or "
            "dataset config (.toml)")


def _parse(path: Path) -> tuple[str, Any]:
    if path.suffix.lower() == ".json":
        return "json", read_json(path, EXPECTED)
    if path.suffix.lower() == ".toml":
        return "toml", read_toml(path, EXPECTED)
    raise ConfigError([ConfigProblem(str(path), "", f"is neither .json nor .toml; expected {EXPECTED}")])


def is_importable(path: str | Path) -> bool:
    """Whether a file is one of the importable sources (not our own config); False when it cannot be parsed."""
    try:
        kind, document = _parse(Path(path))
    except ConfigError:
        return False
    return any(source.format == kind and source.looks_like(document) for source in SOURCES)


def import_file(path: str | Path) -> ImportResult:
    """Convert a OneTrainer / kohya / kohya_ss file; raise ConfigError naming the file when it is none of these or
    does not convert into a valid config."""
    path = Path(path).expanduser()
    kind, document = _parse(path)
    if kind == "toml" and isinstance(document, dict) and ("model" in document or "version" in document):
        raise ConfigError([ConfigProblem(str(path), "", "is a tui-trainer config already; open it instead of importing it")])
    for source in SOURCES:
        if source.format == kind and source.looks_like(document):
            config, report = source.convert(path, document)
            return ImportResult(config, report)
    raise ConfigError([ConfigProblem(str(path), "", f"is not an importable config; expected {EXPECTED}")])

"""The config being edited: a valid TrainConfig, the fields whose typed text is invalid, and its file."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tui_trainer.models.problems import config_problems
from tui_trainer.config import ConfigError, ConfigProblem, TrainConfig, config_from_dict, config_to_dict
from tui_trainer.config import load_config, save_config
from tui_trainer.config.errors import model_class_in
from tui_trainer.config.importing import ImportReport, import_file, is_importable


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


@dataclass
class ConfigDocument:
    """A config under edit. `config` is always valid; `invalid` maps dotted keys to the reason their text is rejected."""

    config: TrainConfig
    path: Path | None = None
    dirty: bool = False
    invalid: dict[str, str] = field(default_factory=dict)
    imported_from: Path | None = None
    """The OneTrainer / kohya / kohya_ss file this unsaved config was imported from (never saved over)."""
    _stamp: tuple[int, int] | None = None

    @classmethod
    def open(cls, path: str | Path) -> ConfigDocument:
        """Load a file; raise ConfigError (and build nothing) when it does not parse."""
        path = Path(path).expanduser().resolve()
        config = load_config(path)
        return cls(config=config, path=path, _stamp=_stamp(path))

    @classmethod
    def open_any(cls, path: str | Path) -> tuple[ConfigDocument, ImportReport | None]:
        """Our config file, or an importable file converted into a new unsaved document (with its import report);
        raise ConfigError when it is neither."""
        path = Path(path).expanduser().resolve()
        if not is_importable(path):
            return cls.open(path), None
        result = import_file(path)
        return cls(config=result.config, dirty=True, imported_from=path), result.report

    def default_save_path(self) -> Path:
        """Where Save As proposes to write: the file, else beside the imported source (a new name), else ./<run>.toml."""
        if self.path is not None:
            return self.path
        source = self.imported_from
        if source is None:
            return Path.cwd() / f"{self.config.workspace.run_name}.toml"
        beside = source.with_suffix(".toml")
        return beside if beside != source else source.with_name(f"{source.stem}-tui-trainer.toml")

    def node(self, key: str, *, create: bool = False) -> tuple[BaseModel, str]:
        """The model holding the last part of dotted `key`, and that part's name.

        Absent sub-tables (like optimizer.settings.prodigy) are their defaults; `create` stores them.
        """
        *parents, name = key.split(".")
        node: BaseModel = self.config
        for part in parents:
            child = getattr(node, part)
            if child is None:
                child = model_class_in(type(node).model_fields[part].annotation)()
                if create:
                    setattr(node, part, child)
            node = child
        return node, name

    def get(self, key: str) -> Any:
        """Current value of a dotted key."""
        node, name = self.node(key)
        return getattr(node, name)

    def set(self, key: str, value: Any) -> None:
        """Assign a (validated) value to a dotted key; clears the key's invalid mark."""
        node, name = self.node(key, create=True)
        if getattr(node, name) != value:
            setattr(node, name, value)
            self.dirty = True
        self.invalid.pop(key, None)

    def mark_invalid(self, key: str, reason: str) -> None:
        """Remember that the text typed for `key` is rejected, and why."""
        self.invalid[key] = reason

    def replace(self, config: TrainConfig, path: Path | None = None, *, dirty: bool = False,
                imported_from: Path | None = None) -> None:
        """Swap in another config (after a successful load, or an import: then there is no file yet)."""
        self.config = config
        self.invalid.clear()
        self.dirty = dirty
        if imported_from is not None:
            self.path, self.imported_from = None, imported_from
        if path is not None:
            self.path, self.imported_from = path, None
        self._stamp = _stamp(self.path) if self.path and not dirty else self._stamp

    def errors(self) -> list[ConfigProblem]:
        """Problems that block saving: rejected fields, then whole-config validation."""
        file = str(self.path or "")
        problems = [ConfigProblem(file, key, reason) for key, reason in sorted(self.invalid.items())]
        try:
            config_from_dict(config_to_dict(self.config), file)
        except ConfigError as error:
            problems += error.problems
        return problems

    def path_problems(self) -> list[ConfigProblem]:
        """Missing folders and files the config names, and what its family does not have (listed, but saving is allowed)."""
        return config_problems(self.config, self.path)

    def save(self, path: str | Path | None = None) -> Path:
        """Save atomically to `path` (or the current path); raise ConfigError when invalid."""
        errors = self.errors()
        if errors:
            raise ConfigError(errors)
        target = Path(path).expanduser().resolve() if path is not None else self.path
        if target is None:
            raise ConfigError([ConfigProblem("", "", "no file name yet; use Save As")])
        if self.imported_from is not None and target == self.imported_from:
            raise ConfigError([ConfigProblem(str(target), "", "is the imported source; save the converted config under a new name")])
        save_config(self.config, target)
        self.path, self.imported_from = target, None
        self.dirty = False
        self._stamp = _stamp(target)
        return target

    def changed_on_disk(self) -> bool:
        """Whether the file was modified by something else since it was loaded or saved."""
        if self.path is None or self._stamp is None:
            return False
        return _stamp(self.path) not in (self._stamp, None)

    def acknowledge_disk(self) -> None:
        """Accept the file's current state on disk as seen (keep editing what we have)."""
        if self.path is not None:
            self._stamp = _stamp(self.path)


def environment_editor() -> str:
    """The user's editor command ($VISUAL, $EDITOR, else vi)."""
    return os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"

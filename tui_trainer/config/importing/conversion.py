"""The state of one import: the source's keys (each marked once read), the document being built, the report."""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path, PureWindowsPath
from typing import Any

from tui_trainer.config.errors import ConfigError, ConfigProblem
from tui_trainer.config.importing.report import ImportReport, KeyReport, Outcome
from tui_trainer.config.io import config_from_dict
from tui_trainer.config.schema import CONFIG_VERSION, TrainConfig

NO_EQUIVALENT = "no tui-trainer equivalent"
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin", ".sft", ".gguf")
_SEGMENT = re.compile(r"^(\w+)(?:\[(\d+)\])?$")
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def flatten(document: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables -> dotted leaf keys ('unet.learning_rate'); lists stay leaves."""
    flat: dict[str, Any] = {}
    for key, value in document.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def safe_name(text: str, fallback: str = "imported") -> str:
    """A run name / file prefix made of letters, digits, '.', '_' and '-'."""
    return _NAME_UNSAFE.sub("-", text).strip("-.") or fallback


def read_json(path: Path, expected: str) -> Any:
    """Parse a JSON file; a ConfigError naming the file and what was expected when it cannot be read or parsed."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError([ConfigProblem(str(path), "", f"cannot read {expected}: {error.strerror or error}")]) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError([ConfigProblem(str(path), "", f"is not valid JSON ({error}); expected {expected}")]) from None


def read_toml(path: Path, expected: str) -> dict[str, Any]:
    """Parse a TOML file; a ConfigError naming the file and what was expected when it cannot be read or parsed."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError([ConfigProblem(str(path), "", f"cannot read {expected}: {error.strerror or error}")]) from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError([ConfigProblem(str(path), "", f"is not valid TOML ({error}); expected {expected}")]) from None


def set_dotted(document: dict[str, Any], target: str, value: Any) -> None:
    """document['a']['b'][0]['c'] = value for target 'a.b[0].c', creating tables and list items on the way."""
    node: Any = document
    segments = target.split(".")
    for position, segment in enumerate(segments):
        name, index = _SEGMENT.match(segment).groups()  # type: ignore[union-attr]
        last = position == len(segments) - 1
        if index is None:
            if last:
                node[name] = value
                return
            node = node.setdefault(name, {})
            continue
        items = node.setdefault(name, [])
        while len(items) <= int(index):
            items.append({})
        if last:
            items[int(index)] = value
            return
        node = items[int(index)]


class Conversion:
    """One import in progress: read source keys with `get` (defaults fill absent ones), write ours with `put`."""

    def __init__(self, source: Path, kind: str, values: Mapping[str, Any], defaults: Mapping[str, Any] | None = None):
        self.source = source
        self.values = dict(values)
        self.defaults = dict(defaults or {})
        self.read: set[str] = set()
        self.document: dict[str, Any] = {"version": CONFIG_VERSION}
        self.report = ImportReport(str(source), kind)

    def given(self, key: str) -> bool:
        """Whether the source sets `key` (to something other than an empty string)."""
        return key in self.values and self.values[key] not in ("", None)

    def get(self, key: str, default: Any = None) -> Any:
        """The source's value of `key`, else the source tool's default; marks the key read."""
        self.read.add(key)
        if self.given(key):
            return self.values[key]
        return self.defaults.get(key, default)

    def put(self, key: str, target: str, value: Any, note: str = "") -> None:
        """Write our `target` from source `key` (None writes nothing: the key stays absent) and report it."""
        self.read.add(key)
        if value is not None:
            set_dotted(self.document, target, value)
        outcome = Outcome.MAPPED if self.given(key) else Outcome.DEFAULTED
        self.report.keys.append(KeyReport(key, outcome, target, value, note))

    def unsupported(self, key: str, why: str = NO_EQUIVALENT) -> None:
        """Report a key the source sets that has no equivalent (a key it leaves out is not listed)."""
        self.read.add(key)
        reported = any(entry.key == key and entry.outcome is Outcome.UNSUPPORTED for entry in self.report.keys)
        if key in self.values and not reported:
            self.report.keys.append(KeyReport(key, Outcome.UNSUPPORTED, note=why))

    def warn(self, message: str) -> None:
        """A value changes meaning, a path does not exist here, a guess was made."""
        if message not in self.report.warnings:
            self.report.warnings.append(message)

    def choose(self, key: str, table: Mapping[str, Any], what: str) -> Any:
        """Look the value of `key` up in `table`; an unknown value is reported (naming the allowed ones), giving None."""
        value = self.get(key)
        if value in table:
            return table[value]
        self.unsupported(key, f"{what} {value!r} has no tui-trainer equivalent; importable: {', '.join(map(str, table))}")
        return None

    def path(self, value: str, *, model: bool = False) -> str:
        """A path as the source wrote it, a relative one resolved against the source's folder. `model`: a name
        that is no local file or folder (a hub repo id like 'org/name') stays as it is."""
        text = str(value)
        if PureWindowsPath(text).drive:
            self.warn(f"{text!r} is a Windows path; it does not exist here: change it to this machine's path")
            return text
        candidate = Path(text).expanduser()
        if candidate.is_absolute():
            return str(candidate)
        resolved = Path(os.path.normpath(self.source.parent.resolve() / candidate))
        if model and not resolved.exists() and not text.startswith((".", "~")) and not text.endswith(MODEL_SUFFIXES):
            return text
        return str(resolved)

    def check_exists(self, key: str, path: str, what: str) -> None:
        """Warn when a path the config names does not exist here (the import still goes on)."""
        if not PureWindowsPath(path).drive and not Path(path).exists():
            self.warn(f"{key}: {what} {path!r} does not exist here")

    def leftovers(self, why: str = NO_EQUIVALENT) -> None:
        """Report every source key no mapping read."""
        for key in self.values:
            if key not in self.read:
                self.unsupported(key, why)

    def finish(self) -> TrainConfig:
        """Validate the built document; a ConfigError names the source file and the source key of each problem."""
        try:
            return config_from_dict(self.document, str(self.source))
        except ConfigError as error:
            origins = {entry.target: entry.key for entry in self.report.keys if entry.target}
            raise ConfigError([
                ConfigProblem(str(self.source), origins.get(problem.key, problem.key),
                              f"{problem.message}" + (f" (imported as {problem.key})" if problem.key in origins else ""))
                for problem in error.problems
            ]) from None

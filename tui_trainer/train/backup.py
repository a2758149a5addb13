"""Backups: everything needed to continue a run exactly, written atomically.

    backups/step-000120/
      trainable.safetensors   the method's trainable tensors (methods.backup_state)
      state.safetensors       every tensor of the training state: optimizer, EMA, RNG states
      state.json              the rest of that state (structure, counters, position in the epoch, scalars)
      config.toml             the config the state was made with
      manifest.json           written last: size and sha256 of each file above

A backup is written into a temp folder beside its final name, fsynced, renamed into place and the parent
folder fsynced; only a folder whose manifest matches its files counts, so a kill at any moment leaves the
previous backups as they were. Nothing is pickled: tensors go to safetensors, everything else to JSON
(accelerate's save_state would pickle the optimizer and RNG states, so it is not used).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TRAINABLE = "trainable.safetensors"
STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"
CONFIG = "config.toml"
NAME = re.compile(r"^step-(\d+)$")
PAUSE_ENV = "TUI_TRAINER_TEST_PAUSE_IN_BACKUP"
"""Test hook, "STEP:FLAG_FILE": the writer of step STEP creates FLAG_FILE and waits (for a kill) before its manifest."""
PAUSE_S = 60.0


def backup_name(step: int) -> str:
    """Folder name of the backup of `step`."""
    return f"step-{step:06d}"


# -- state trees: nested Python values with tensors <-> JSON + a flat tensor dict -------------------------------


def encode_tree(value: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    """`value` as JSON, with each tensor moved into `tensors` under its dotted path (tuples, non-str keys and
    numpy arrays are tagged so decode_tree gives back the same types)."""
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().to("cpu").contiguous().clone()
        return {"$tensor": path}
    if isinstance(value, np.ndarray):
        return {"$ndarray": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return {"$tuple": [encode_tree(item, tensors, f"{path}.{index}") for index, item in enumerate(value)]}
    if isinstance(value, list):
        return [encode_tree(item, tensors, f"{path}.{index}") for index, item in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(key, str) and not key.startswith("$") for key in value):
            return {key: encode_tree(item, tensors, f"{path}.{key}") for key, item in value.items()}
        return {"$items": [[encode_tree(key, tensors, f"{path}.key{index}"), encode_tree(item, tensors, f"{path}.{index}")]
                           for index, (key, item) in enumerate(value.items())]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot back up {path}: {type(value).__name__} is neither a tensor nor plain data")


TAGS: dict[str, Callable[[dict[str, Any], dict[str, torch.Tensor]], Any]] = {
    "$tensor": lambda node, tensors: tensors[node["$tensor"]],
    "$ndarray": lambda node, tensors: np.asarray(node["$ndarray"], dtype=node["dtype"]),
    "$tuple": lambda node, tensors: tuple(decode_tree(item, tensors) for item in node["$tuple"]),
    "$items": lambda node, tensors: {decode_tree(key, tensors): decode_tree(item, tensors) for key, item in node["$items"]},
}
"""How each tagged JSON node is turned back into its value."""


def decode_tree(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of encode_tree."""
    if isinstance(node, list):
        return [decode_tree(item, tensors) for item in node]
    if isinstance(node, dict):
        tag = next((key for key in node if key in TAGS), None)
        if tag is not None:
            return TAGS[tag](node, tensors)
        return {key: decode_tree(item, tensors) for key, item in node.items()}
    return node


# -- RNG states ------------------------------------------------------------------------------------------------


def rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """Every RNG stream of the process: python, numpy, torch CPU, each CUDA device, and the named generators."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generators": {name: generator.get_state() for name, generator in generators.items()},
    }


def set_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    """Put back what rng_state took."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, generator in generators.items():
        generator.set_state(state["generators"][name])


# -- writing -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backup:
    """A complete backup folder and what it holds."""

    path: Path
    step: int

    def load(self) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
        """(trainable tensors, training state, config text)."""
        tensors = load_file(self.path / STATE_TENSORS)
        state = decode_tree(json.loads((self.path / STATE_JSON).read_text(encoding="utf-8")), tensors)
        return load_file(self.path / TRAINABLE), state, (self.path / CONFIG).read_text(encoding="utf-8")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    save_file(tensors, str(path))


def _pause_for_test(step: int) -> None:
    """The kill test's hook: announce the pause through a flag file, then wait to be killed."""
    wanted, _, flag = os.environ.get(PAUSE_ENV, "").partition(":")
    if wanted and int(wanted) == step:
        Path(flag).touch()
        deadline = time.monotonic() + PAUSE_S
        while time.monotonic() < deadline:
            time.sleep(0.05)


def write_backup(folder: Path, step: int, trainable: dict[str, torch.Tensor], state: dict[str, Any], config_text: str) -> Backup:
    """Write a backup of `step` into `folder` atomically; an OSError leaves no trace and older backups intact."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / backup_name(step)
    for stale in folder.glob(".step-*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder))
    try:
        state_tensors: dict[str, torch.Tensor] = {}
        tree = encode_tree(state, state_tensors, "state")
        _write_tensors(tmp / TRAINABLE, {key: value.detach().to("cpu").contiguous() for key, value in trainable.items()})
        _write_tensors(tmp / STATE_TENSORS, state_tensors)
        _write_bytes(tmp / STATE_JSON, json.dumps(tree, separators=(",", ":")).encode())
        _write_bytes(tmp / CONFIG, config_text.encode())
        _pause_for_test(step)
        files = {file.name: {"bytes": file.stat().st_size, "sha256": _sha256(file)} for file in sorted(tmp.iterdir())}
        manifest = {"format": FORMAT_VERSION, "step": step, "files": files}
        _write_bytes(tmp / MANIFEST, json.dumps(manifest, indent=2).encode())
        for file in tmp.iterdir():
            _fsync_path(file)
        _fsync_path(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
        _fsync_path(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Backup(target, step)


# -- reading -----------------------------------------------------------------------------------------------------


def check_backup(path: Path, *, hashes: bool = True) -> str | None:
    """Why `path` is not a complete backup (None when it is): manifest, file sizes and, with `hashes`, contents."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
        if manifest.get("format") != FORMAT_VERSION:
            return f"backup format {manifest.get('format')} is not {FORMAT_VERSION}"
        for name in (TRAINABLE, STATE_TENSORS, STATE_JSON, CONFIG):
            entry = files[name]
            file = path / name
            if file.stat().st_size != entry["bytes"]:
                return f"{name} has {file.stat().st_size} bytes, the manifest says {entry['bytes']}"
            if hashes and _sha256(file) != entry["sha256"]:
                return f"{name} does not match its sha256 in the manifest"
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"no valid manifest ({type(error).__name__}: {error})"
    return None


def list_backups(folder: Path) -> list[Backup]:
    """Backup folders (complete by name and manifest sizes), oldest first."""
    if not folder.is_dir():
        return []
    found = [Backup(path, int(match[1])) for path in folder.iterdir() if (match := NAME.match(path.name)) and path.is_dir()]
    return sorted((backup for backup in found if check_backup(backup.path, hashes=False) is None), key=lambda backup: backup.step)


def newest_backup(folder: Path, on_invalid: Callable[[Path, str], None] = lambda path, why: None) -> Backup | None:
    """The newest backup whose files match their manifest hashes; `on_invalid` hears about each one passed over."""
    for backup in reversed(list_backups(folder)):
        problem = check_backup(backup.path)
        if problem is None:
            return backup
        on_invalid(backup.path, problem)
    return None


def prune_backups(folder: Path, keep: int) -> list[Path]:
    """Delete all but the `keep` newest backups; returns the deleted folders."""
    backups = list_backups(folder)
    doomed = [backup.path for backup in backups[: max(0, len(backups) - keep)]]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed

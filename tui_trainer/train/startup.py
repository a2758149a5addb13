"""A trainer process's start-up: the training stack is imported with the cycle collector paused, without
bitsandbytes when the run uses none of it, and without LOMO optimizers. Imports no torch (launching reads it
before deciding to detach).

Measured on the tiny SD1.5 LoRA (2 CPUs, 2026-12-07): importing the stack took 4.8 s; 3.9 s with the collector
paused (the imports make about 900,000 long-lived objects and almost no cyclic garbage, and each full collection
scans all of them again), 3.9 s without bitsandbytes (its import runs `torch.compile`, which pulls in torch's
compiler; diffusers and peft import it whenever it is installed), 3.0 s with both. accelerate asks whether
lomo_optim is installed twice at every optimizer step (`importlib.util.find_spec`, a walk of sys.path: about
0.25 ms a step, 1% of the tiny model's cached step); this trainer offers no LOMO optimizer, so it is hidden.
"""

from __future__ import annotations

import contextlib
import gc
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tui_trainer.config import TrainConfig
from tui_trainer.config.enums import OptimizerName, WeightDtype

BITSANDBYTES_OPTIMIZERS = frozenset({OptimizerName.ADAMW8BIT, OptimizerName.LION8BIT})
"""Optimizers from bitsandbytes (train/optim.py's table; a test checks the two agree)."""

TRAINING_STACK = ("diffusers", "peft", "transformers", "bitsandbytes")
"""Packages that decide at import whether bitsandbytes is installed: hiding it only works before them."""

NEVER_USED = ("lomo_optim",)
"""Packages a trainer process never imports but accelerate looks for at every step (train/optim.py offers none
of their optimizers; a test checks)."""


def uses_bitsandbytes(config: TrainConfig) -> bool:
    """Whether the run needs bitsandbytes: an 8-bit optimizer, an nf4 part, or a base model stored quantised by it."""
    parts = config.parts
    dtypes = {config.model.vae_dtype, *(getattr(parts, table).dtype for table in type(parts).model_fields)}
    return (config.optimizer.name in BITSANDBYTES_OPTIMIZERS or WeightDtype.NF4 in dtypes
            or base_may_be_bitsandbytes_quantized(config.model.base_model))


def base_may_be_bitsandbytes_quantized(base_model: str) -> bool:
    """True unless the base's own files are here and say it is not stored quantised by bitsandbytes: a local
    folder's or cached Hugging Face snapshot's `config.json` files, a local single file's tensor names. A repo
    not downloaded yet counts as maybe (its files are read only after the stack is imported)."""
    path = Path(base_model).expanduser()
    if path.is_file():
        return _file_is_quantized(path)
    folder = path if path.is_dir() else _cached_snapshot(base_model)
    if folder is None:
        return True
    return any(_config_is_quantized(config) for config in [folder / "config.json", *folder.glob("*/config.json")] if config.is_file())


def _cached_snapshot(repo_id: str) -> Path | None:
    """The folder of a Hugging Face repo's newest cached snapshot, or None when it is not cached."""
    from huggingface_hub import try_to_load_from_cache

    for marker in ("model_index.json", "config.json"):
        try:
            found = try_to_load_from_cache(repo_id, marker)
        except ValueError:  # not a repo id
            return None
        if isinstance(found, str):
            return Path(found).parent
    return None


def _config_is_quantized(config: Path) -> bool:
    try:
        settings = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return True
    quantization = settings.get("quantization_config") if isinstance(settings, dict) else None
    return isinstance(quantization, dict) and "bitsandbytes" in str(quantization.get("quant_method", "")).lower()


def _file_is_quantized(path: Path) -> bool:
    """A single file holds bitsandbytes weights when it has their quantisation-state tensors (names from
    bitsandbytes' Params4bit / Int8Params serialisation)."""
    if path.suffix != ".safetensors":
        return True
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as weights:
            return any("quant_state" in key or key.endswith((".absmax", ".SCB")) for key in weights.keys())
    except Exception:  # unreadable: loading it reports the problem
        return True


@contextlib.contextmanager
def trainer_imports(config: TrainConfig) -> Iterator[None]:
    """Import the training stack inside this block, in a process that runs nothing but this trainer. The cycle
    collector is paused, and the objects made meanwhile are frozen out of later collections (`gc.freeze`: they
    live as long as the process). Hidden (`sys.modules` entry None: imports and `find_spec` see no package):
    NEVER_USED, and bitsandbytes when the run does not use it and the stack is not imported yet."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        for name in NEVER_USED:
            sys.modules.setdefault(name, None)  # type: ignore[arg-type]
        if not any(name in sys.modules for name in TRAINING_STACK) and not uses_bitsandbytes(config):
            sys.modules["bitsandbytes"] = None  # type: ignore[assignment]
        yield
    finally:
        gc.freeze()
        if collecting:
            gc.enable()


def import_train_config(config: TrainConfig, own_process: bool) -> Callable[..., tuple[int, Any]]:
    """`train.entry.train_config`, imported inside `trainer_imports` when the process is the trainer's own."""
    with trainer_imports(config) if own_process else contextlib.nullcontext():
        from tui_trainer.train.entry import train_config
    return train_config

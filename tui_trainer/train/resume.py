"""What may change between a backup and the run that resumes from it.

A change is refused when the backed-up state no longer fits (other trainable tensors or optimizer groups) or
when the epoch plans would differ (other dataset, batch size, buckets, seed), since the resumed run could then
not continue where it stopped. Everything else (samples, cadences, more epochs, learning rate, ...) is
allowed and listed in the `resume` event.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from tui_trainer.config import TrainConfig, config_to_dict
from tui_trainer.data.captions import Captions

BREAKING: dict[str, str] = {
    "method": "the training method",
    "model.family": "the model family",
    "model.base_model": "the base model",
    "model.vae": "the VAE",
    "model.prediction_type": "the prediction type",
    "concepts": "the dataset (concepts)",
    "training.resolution": "the resolution (buckets)",
    "training.batch_size": "the batch size",
    "training.gradient_accumulation": "gradient accumulation (steps per epoch)",
    "training.seed": "the seed (epoch plans, noise)",
    "training.bucket_step": "the buckets",
    "training.bucket_min_side": "the buckets",
    "training.bucket_max_side": "the buckets",
    "training.bucket_max_aspect": "the buckets",
    "training.bucket_remainder": "the buckets",
    "training.ema": "EMA on or off",
    "optimizer.name": "the optimizer (its state)",
    "parts.denoiser.train": "which parts train",
    "parts.text_encoder.train": "which parts train",
    "parts.text_encoder_2.train": "which parts train",
    "lora": "the adapters (type, rank, alpha, targets)",
    "embedding": "the embedding (tokens, vectors)",
    "distributed.num_processes": "the number of processes (effective batch)",
}
"""Dotted config keys (and everything under them) that a resume must not change, with what each decides."""


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """A config document as {dotted key: leaf value}; list items are `key[index]`."""
    if isinstance(value, dict):
        items = [(f"{prefix}.{key}" if prefix else str(key), item) for key, item in value.items()]
    elif isinstance(value, list) and any(isinstance(item, (dict, list)) for item in value):
        items = [(f"{prefix}[{index}]", item) for index, item in enumerate(value)]
    else:
        return {prefix: value}
    return {key: leaf for name, item in items for key, leaf in flatten(item, name).items()}


def _breaks(key: str) -> str | None:
    for prefix, what in BREAKING.items():
        if key == prefix or key.startswith((prefix + ".", prefix + "[")):
            return what
    return None


def config_changes(old: TrainConfig, new: TrainConfig) -> tuple[list[str], list[str]]:
    """(refused changes as 'key: old -> new (what it decides)', allowed changed keys)."""
    before, after = flatten(config_to_dict(old)), flatten(config_to_dict(new))
    refused, allowed = [], []
    for key in sorted(before.keys() | after.keys()):
        if before.get(key) == after.get(key):
            continue
        what = _breaks(key)
        if what is None:
            allowed.append(key)
        else:
            refused.append(f"{key}: {before.get(key, '(unset)')!r} -> {after.get(key, '(unset)')!r} ({what})")
    return refused, allowed


def dataset_fingerprint(items: list[Any], captions: Captions) -> str:
    """sha256 of the training items as planned: path, size, bucket, concept and caption text of each, in order
    (the caption, or "" and the list of prompts-file lines when there are several)."""
    rows = []
    for item in items:
        choices = captions.of(item)
        caption, lines = (choices[0], []) if len(choices) == 1 else ("", list(choices))
        rows.append([str(item.path), item.width, item.height, list(item.bucket), item.concept_index, caption, lines])
    return hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()


def plan_paths(batches: list[list[Any]]) -> list[list[str]]:
    """An epoch plan as image paths (what a backup stores of the remaining batch order)."""
    return [[str(item.path) for item in batch] for batch in batches]

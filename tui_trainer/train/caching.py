"""On-disk caches reused across runs: VAE latents and text-encoder outputs, both safetensors.

A latent's key is the image's content hash + bucket + crop + flip + the VAE's identity, so an edited image,
another crop or another VAE is a miss, and a renamed file is still a hit.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from tui_trainer.atomic import atomic_write_bytes
from tui_trainer.train.dataset import Augment, choose_augment, fixed_crop_rng, item_rng, open_rgb, to_tensor, transform


def file_hash(path: str | Path) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def module_identity(module: torch.nn.Module) -> str:
    """A short fingerprint of a model part: its config, dtype and a sample of every weight tensor."""
    config = getattr(module, "config", None)
    settings = config.to_dict() if hasattr(config, "to_dict") else dict(config or {})
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().flatten()[:64].to("cpu", torch.float32).numpy().tobytes())
    return digest.hexdigest()[:16]


class TensorCache:
    """key -> tensors, in memory and as one safetensors file per key under `folder` (sharded by key prefix)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.memory: dict[str, dict[str, torch.Tensor]] = {}

    def path(self, key: str) -> Path:
        """File of a key."""
        return self.folder / key[:2] / f"{key}.safetensors"

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        """The tensors under `key`, or None."""
        if key not in self.memory:
            path = self.path(key)
            if not path.is_file():
                return None
            try:
                self.memory[key] = load_file(path)
            except Exception:  # a damaged cache file is a miss; it gets rewritten
                return None
        return self.memory[key]

    def put(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        """Store tensors under `key` (atomic write)."""
        tensors = {name: value.detach().to("cpu").contiguous() for name, value in tensors.items()}
        atomic_write_bytes(self.path(key), safetensors_bytes(tensors))
        self.memory[key] = tensors


def _key(*parts: object) -> str:
    return hashlib.sha256("|".join(str(part) for part in parts).encode()).hexdigest()


class LatentCache:
    """VAE latents of augmented images."""

    def __init__(self, folder: Path, vae_id: str):
        self.store = TensorCache(folder / "latents")
        self.vae_id = vae_id
        self.hashes: dict[str, str] = {}

    def key(self, item: Any, augment: Augment) -> str:
        """Cache key of one item with one crop and flip."""
        path = str(item.path)
        if path not in self.hashes:
            self.hashes[path] = file_hash(path)
        bucket = item.bucket
        return _key(self.hashes[path], f"{bucket[0]}x{bucket[1]}", augment.left, augment.top, augment.flip, self.vae_id)

    def latent(self, item: Any, augment: Augment) -> torch.Tensor:
        """The cached latent of an item (KeyError when it was never encoded)."""
        found = self.store.get(self.key(item, augment))
        if found is None:
            raise KeyError(f"no cached latent for {item.path}")
        return found["latent"]


def latent_variants(items: Iterable[Any], concepts: list, seed: int) -> list[tuple[Any, Augment]]:
    """Every (image, crop, flip) a run can ask for: one crop per image, unflipped and/or flipped."""
    seen: dict[tuple[str, tuple[int, int]], Any] = {}
    for item in items:
        seen.setdefault((str(item.path), tuple(item.bucket)), item)
    variants = []
    for item in seen.values():
        concept = concepts[item.concept_index]
        crop = choose_augment(item, concept, item_rng(seed, 0, 0, 0), fixed_crop_rng(seed, item.path))
        flips = {False: concept.flip_probability < 1, True: concept.flip_probability > 0}
        variants.extend((item, Augment(crop.left, crop.top, flip)) for flip, wanted in flips.items() if wanted)
    return variants


def fill_latent_cache(
    cache: LatentCache,
    variants: list[tuple[Any, Augment]],
    encode: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int,
    on_progress: Callable[[int, int, int], None],
    on_skip: Callable[[str, str], None],
) -> set[str]:
    """Encode every variant not yet cached, a bucket at a time; returns paths that could not be read."""
    bad: set[str] = set()
    missing = []
    for item, augment in variants:
        try:
            if cache.store.get(cache.key(item, augment)) is None:
                missing.append((item, augment))
        except OSError as error:
            bad.add(str(item.path))
            on_skip(str(item.path), f"{type(error).__name__}: {error}")
    hits = len(variants) - len(missing) - len(bad)
    on_progress(hits, len(variants), hits)
    missing.sort(key=lambda pair: tuple(pair[0].bucket))
    done = hits
    for start in range(0, len(missing), batch_size):
        chunk = missing[start : start + batch_size]
        pixels, keys = {}, []
        for item, augment in chunk:
            if str(item.path) in bad:
                continue
            try:
                image = to_tensor(transform(open_rgb(item.path), item.bucket, augment))
            except Exception as error:  # PIL raises many types for damaged files
                bad.add(str(item.path))
                on_skip(str(item.path), f"{type(error).__name__}: {error}")
                continue
            pixels.setdefault(tuple(item.bucket), []).append(image)
            keys.append((tuple(item.bucket), cache.key(item, augment)))
        for bucket, images in pixels.items():
            latents = encode(torch.stack(images))
            bucket_keys = [key for key_bucket, key in keys if key_bucket == bucket]
            for key, latent in zip(bucket_keys, latents, strict=True):
                cache.store.put(key, {"latent": latent})
        done += len(chunk)
        on_progress(done, len(variants), hits)
    return bad


class TextCache:
    """Text-encoder outputs per caption (used when no text encoder trains), computed on first use."""

    def __init__(self, folder: Path, encoder_id: str, encode: Callable[[list[str]], dict[str, torch.Tensor]]):
        self.store = TensorCache(folder / "text")
        self.encoder_id = encoder_id
        self.encode = encode

    def get(self, captions: list[str]) -> dict[str, torch.Tensor]:
        """Batched conditioning tensors of `captions`, encoding the ones not cached yet."""
        keys = [_key(self.encoder_id, caption) for caption in captions]
        missing = sorted({(key, caption) for key, caption in zip(keys, captions, strict=True) if self.store.get(key) is None})
        if missing:
            encoded = self.encode([caption for _, caption in missing])
            for row, (key, _) in enumerate(missing):
                self.store.put(key, {name: value[row] for name, value in encoded.items()})
        rows = [self.store.get(key) for key in keys]
        return {name: torch.stack([row[name] for row in rows]) for name in rows[0]}

"""The data pipeline: one epoch's planned micro-batches -> augmented pixels (or cached latents) and captions.

All randomness is derived from (seed, epoch, batch index, item index), never from a running RNG, so any
batch of any epoch can be rebuilt exactly (workers in any order, or a resumed run).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from tui_trainer.config.schema import ConceptConfig
from tui_trainer.data.captions import Captions
from tui_trainer.train.masks import MaskSource, fill_mask

BACKGROUND = (255, 255, 255)
"""Colour transparent pixels are composited on."""


@dataclass(frozen=True)
class Augment:
    """Where an image is cropped after resizing to cover its bucket, and whether it is flipped."""

    left: int
    top: int
    flip: bool


def item_rng(seed: int, epoch: int, batch: int, index: int) -> random.Random:
    """The RNG of one item of one batch of one epoch (string seeds hash the same in every process)."""
    return random.Random(f"{seed}:{epoch}:{batch}:{index}")


def open_rgb(path: str | Path, background: tuple[int, int, int] = BACKGROUND) -> Image.Image:
    """Open an image upright (EXIF orientation applied) as RGB, transparency composited on `background`."""
    with Image.open(path) as opened:
        image = ImageOps.exif_transpose(opened)
        image.load()
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        image = Image.alpha_composite(canvas, rgba)
    return image.convert("RGB")


def cover_size(size: tuple[int, int], bucket: tuple[int, int]) -> tuple[int, int]:
    """Smallest size with the image's aspect that covers the bucket."""
    scale = max(bucket[0] / size[0], bucket[1] / size[1])
    return max(bucket[0], math.ceil(size[0] * scale - 1e-6)), max(bucket[1], math.ceil(size[1] * scale - 1e-6))


def choose_crop(size: tuple[int, int], bucket: tuple[int, int], jitter: float, rng: random.Random) -> tuple[int, int]:
    """Crop offset: centred, moved by up to `jitter` of the spare pixels either way."""
    covered = cover_size(size, bucket)
    offsets = []
    for axis in range(2):
        spare = covered[axis] - bucket[axis]
        offsets.append(min(spare, max(0, round(spare / 2 + jitter * (rng.random() - 0.5) * spare))))
    return offsets[0], offsets[1]


def transform(image: Image.Image, bucket: tuple[int, int], augment: Augment, resample: int = Image.Resampling.LANCZOS) -> Image.Image:
    """Resize to cover the bucket, crop, flip."""
    covered = cover_size(image.size, bucket)
    image = image.resize(covered, resample)
    image = image.crop((augment.left, augment.top, augment.left + bucket[0], augment.top + bucket[1]))
    return ImageOps.mirror(image) if augment.flip else image


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB image -> CHW float tensor in [-1, 1]."""
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def mask_tensor(path: str | Path, bucket: tuple[int, int], augment: Augment) -> torch.Tensor:
    """A -masklabel image resized, cropped and flipped like its image -> 1HW tensor in [0, 1]."""
    with Image.open(path) as opened:
        mask = ImageOps.exif_transpose(opened).convert("L")
    mask = transform(mask, bucket, augment, Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0)[None]


def item_mask(source: MaskSource, item: Any, augment: Augment, rng: random.Random) -> torch.Tensor:
    """An item's mask: its -masklabel.png transformed like the image when the source uses files, else generated."""
    if source.use_files and item.mask_path:
        return mask_tensor(item.mask_path, item.bucket, augment)
    return fill_mask(source.fill, rng, tuple(item.bucket))


def geometry(item: Any, augment: Augment) -> tuple[int, int, int, int, int, int]:
    """(original height, original width, crop top, crop left, target height, target width) of an item: SDXL's
    size and crop conditioning. The crop is in the resized image, measured from the left of the image as shown."""
    covered = cover_size((item.width, item.height), item.bucket)
    left = covered[0] - item.bucket[0] - augment.left if augment.flip else augment.left
    return item.height, item.width, augment.top, left, item.bucket[1], item.bucket[0]


def process_caption(choices: tuple[str, ...], concept: ConceptConfig, rng: random.Random) -> str:
    """An item's caption for one step from its caption choices (read_captions: prefix/suffix already applied): a
    prompts-file pick, caption dropout, then the kept leading tags followed by the others with tag dropout and shuffling."""
    caption = rng.choice(choices) if len(choices) > 1 else choices[0]
    if concept.caption_dropout and rng.random() < concept.caption_dropout:
        return ""
    if not (concept.tag_dropout or concept.shuffle_tags):
        return caption
    tags = [tag.strip() for tag in caption.split(",") if tag.strip()]
    kept, rest = tags[: concept.keep_tokens], tags[concept.keep_tokens :]
    if concept.tag_dropout:
        rest = [tag for tag in rest if rng.random() >= concept.tag_dropout]
    if concept.shuffle_tags:
        rng.shuffle(rest)
    return ", ".join(kept + rest)


def fixed_crop_rng(seed: int, path: str | Path) -> random.Random:
    """The RNG of an image's one crop when latents are cached (a cached latent has one crop per image)."""
    return random.Random(f"{seed}:crop:{path}")


def choose_augment(item: Any, concept: ConceptConfig, rng: random.Random, crop_rng: random.Random | None = None) -> Augment:
    """Crop and flip of one item; `crop_rng` fixes the crop per image (cached latents)."""
    flip = bool(concept.flip_probability) and rng.random() < concept.flip_probability
    left, top = choose_crop((item.width, item.height), item.bucket, concept.crop_jitter, crop_rng or rng)
    return Augment(left, top, flip)


@dataclass
class TrainingBatch:
    """One micro-batch as the training step reads it."""

    index: int
    """Its position in the epoch's plan."""
    captions: list[str]
    """One processed caption per loaded image."""
    paths: list[str]
    geometry: torch.Tensor
    """(B, 6): each image's original size, crop top-left and target size (SDXL's time ids)."""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(path, reason) of the images that failed to load and were left out."""
    latents: torch.Tensor | None = None
    """Cached latents (B, C, h, w), when latents are cached; else None."""
    pixels: torch.Tensor | None = None
    """Pixels in [-1, 1] (B, 3, H, W), when latents are not cached; else None."""
    masks: torch.Tensor | None = None
    """(B, 1, H, W) training masks, when the method or config uses them."""

    def pin_memory(self) -> TrainingBatch:
        """The batch with its tensors in pinned memory (the DataLoader calls this on CUDA)."""
        pinned = {name: value.pin_memory() for name, value in vars(self).items() if isinstance(value, torch.Tensor)}
        return replace(self, **pinned)


class EpochBatches(torch.utils.data.Dataset):
    """One epoch's micro-batches in plan order; element i is batch i, loaded and augmented.

    `captions` holds every item's caption choices (read once when training starts).
    With `latents` (a key -> tensor lookup), pixels are not loaded: each item's cached latent is used.
    With `masks`, every item has a mask. Items that fail to load are left out and reported in `skipped`.
    """

    def __init__(self, batches: list[list[Any]], epoch: int, seed: int, concepts: list[ConceptConfig], captions: Captions,
                 latents: Any = None, masks: MaskSource | None = None):
        self.batches = batches
        self.epoch = epoch
        self.seed = seed
        self.concepts = concepts
        self.captions = captions
        self.latents = latents
        self.masks = masks

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> TrainingBatch:
        images, captions, masks, sizes, paths, skipped = [], [], [], [], [], []
        for position, item in enumerate(self.batches[index]):
            concept = self.concepts[item.concept_index]
            rng = item_rng(self.seed, self.epoch, index, position)
            try:
                if self.latents is not None:
                    augment = choose_augment(item, concept, rng, fixed_crop_rng(self.seed, item.path))
                    image = self.latents.latent(item, augment)
                else:
                    augment = choose_augment(item, concept, rng)
                    image = to_tensor(transform(open_rgb(item.path), item.bucket, augment))
                if self.masks is not None:
                    mask_rng = random.Random(f"{self.seed}:{self.epoch}:{index}:{position}:mask")
                    masks.append(item_mask(self.masks, item, augment, mask_rng))
                images.append(image)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
                skipped.append((str(item.path), f"{type(error).__name__}: {error}"))
                continue
            captions.append(process_caption(self.captions.of(item), concept, rng))
            sizes.append(geometry(item, augment))
            paths.append(str(item.path))
        stacked = torch.stack(images) if images else None
        return TrainingBatch(
            index=index, captions=captions, paths=paths, skipped=skipped,
            geometry=torch.tensor(sizes, dtype=torch.float32).reshape(-1, 6),
            latents=stacked if self.latents is not None else None,
            pixels=stacked if self.latents is None else None,
            masks=torch.stack(masks) if masks else None,
        )

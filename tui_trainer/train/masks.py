"""Masks: where each image's mask comes from (its -masklabel.png, random shapes or all ones) and the
loss weights of masked training."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from tui_trainer.config.enums import RandomMaskKind
from tui_trainer.config.schema import TrainConfig, TrainingConfig

FULL = "full"
"""Fill kind of an image without a mask file in masked training: the whole image counts."""


@dataclass(frozen=True)
class MaskSource:
    """Where each item's mask comes from: its -masklabel.png when `use_files` and it has one, else `fill`."""

    use_files: bool
    fill: str
    """full, or a RandomMaskKind value."""


def _canvas(size: tuple[int, int]) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("L", size, 0)
    return image, ImageDraw.Draw(image)


def rectangles(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    """One to three rectangles, each 10-60% of a side."""
    width, height = size
    image, draw = _canvas(size)
    for _ in range(rng.randint(1, 3)):
        w, h = round(width * rng.uniform(0.1, 0.6)), round(height * rng.uniform(0.1, 0.6))
        left, top = rng.randrange(max(1, width - w)), rng.randrange(max(1, height - h))
        draw.rectangle((left, top, left + w, top + h), fill=255)
    return image


def strokes(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    """One to four brush strokes: thick polylines of 2-6 segments."""
    width, height = size
    image, draw = _canvas(size)
    for _ in range(rng.randint(1, 4)):
        points = [(rng.randrange(width), rng.randrange(height)) for _ in range(rng.randint(3, 7))]
        draw.line(points, fill=255, width=max(1, round(min(size) * rng.uniform(0.04, 0.15))), joint="curve")
    return image


def _full(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    return Image.new("L", size, 255)


FILLS: dict[str, Callable[[random.Random, tuple[int, int]], Image.Image]] = {
    FULL: _full,
    RandomMaskKind.RECTANGLES: rectangles,
    RandomMaskKind.STROKES: strokes,
    RandomMaskKind.BOTH: lambda rng, size: rng.choice((rectangles, strokes))(rng, size),
}
"""Mask of an image without a mask file, by fill kind (255 = masked)."""


def fill_mask(kind: str, rng: random.Random, size: tuple[int, int]) -> torch.Tensor:
    """A generated mask of `size` (width, height) -> 1HW tensor in [0, 1]."""
    return torch.from_numpy(np.asarray(FILLS[kind](rng, size), dtype=np.float32) / 255.0)[None]


def training_masks(config: TrainConfig) -> MaskSource | None:
    """Masks of masked training (mask files, images without one count whole), or None when it is off."""
    return MaskSource(True, FULL) if config.training.masked_training else None


def loss_weights(masks: torch.Tensor, size: tuple[int, int], training: TrainingConfig, generator: torch.Generator) -> torch.Tensor:
    """Per-element loss weights (B1HW at latent `size`) of masked training: 1 inside the mask, unmasked_weight
    outside, all ones for a sample drawn with unmasked_probability, optionally divided by the mean weight so
    a small mask is not under-weighted."""
    weights = F.interpolate(masks.float(), size=size, mode="area")
    weights = training.unmasked_weight + (1 - training.unmasked_weight) * weights
    if training.unmasked_probability:
        draws = torch.rand(len(masks), generator=generator, device=generator.device).to(weights.device)
        weights = torch.where((draws < training.unmasked_probability)[:, None, None, None], torch.ones_like(weights), weights)
    if training.normalize_masked_area:
        weights = weights / weights.mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    return weights

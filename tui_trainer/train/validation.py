"""Validation loss: the training loss on held-out images (the type = "validation" concepts), without gradients.

Each image is measured `validation.draws` times, each draw's timestep and noise coming from a generator seeded by
(validation.seed, batch, draw) and nothing else, so the loss moves only when the weights do: the curve is comparable
between steps and, with the same seed and images, between runs. Batches hold one concept and one bucket each, so the
loss per concept is exact.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from tui_trainer.config.enums import CadenceUnit
from tui_trainer.config.schema import TrainConfig
from tui_trainer.data import read_captions
from tui_trainer.runs.events import ValidationEvent
from tui_trainer.train.dataset import EpochBatches, TrainingBatch

SEED_STRIDE = 1_000_003
"""Spacing of the per-batch seeds: batch b, draw d use seed * stride^2 + b * stride + d (never two the same)."""


@dataclass
class ValidationBatch:
    """Held-out images of one concept and one bucket, as latents, with their fixed captions."""

    concept: str
    batch: TrainingBatch


def validation_due(config: TrainConfig, step: int, epoch: int, epoch_ended: bool) -> bool:
    """Whether validation runs after optimizer step `step` (1-based) in 1-based `epoch`."""
    validation = config.validation
    if not validation.every:
        return False
    if validation.unit is CadenceUnit.EPOCHS:
        return epoch_ended and epoch % validation.every == 0
    return step % validation.every == 0


def build_validation_set(
    config: TrainConfig, items: list[Any], encode: Callable[[torch.Tensor], torch.Tensor], warn: Callable[[str], None],
    masks: Any = None,
) -> list[ValidationBatch]:
    """The held-out batches (one concept x bucket each, `training.batch_size` images), pixels encoded once."""
    captions = read_captions(items, config.concepts)
    groups: dict[tuple[int, tuple[int, int]], list[Any]] = defaultdict(list)
    for item in items:
        groups[(item.concept_index, item.bucket)].append(item)
    size = config.training.batch_size
    planned = [(config.concepts[index].name, group[start:start + size])
               for (index, _), group in sorted(groups.items()) for start in range(0, len(group), size)]
    dataset = EpochBatches([batch for _, batch in planned], 0, config.validation.seed, config.concepts, captions, masks=masks)
    batches = []
    for index, (concept, _) in enumerate(planned):
        batch = dataset[index]
        for path, reason in batch.skipped:
            warn(f"validation: skipped unreadable image {path}: {reason}")
        if batch.captions:
            with torch.no_grad():
                latents = encode(batch.pixels).cpu()
            batches.append(ValidationBatch(concept, replace(batch, pixels=None, latents=latents)))
    return batches


@contextlib.contextmanager
def evaluating(modules: list[torch.nn.Module]) -> Any:
    """The modules in eval mode (no dropout) and no gradients; their training modes restored after."""
    modes = [module.training for module in modules]
    for module in modules:
        module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, mode in zip(modules, modes, strict=True):
            module.train(mode)


def measure(
    batches: list[ValidationBatch], config: TrainConfig, device: torch.device, step: int, epoch: int | None,
    batch_loss: Callable[[TrainingBatch, torch.Tensor, torch.Generator], torch.Tensor],
) -> ValidationEvent:
    """The validation event of this step: the image-weighted mean loss, overall and per concept.

    `batch_loss(batch, latents on the device, generator)` is the training step's loss (no backward)."""
    started = time.perf_counter()
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    seed = config.validation.seed * SEED_STRIDE * SEED_STRIDE
    for index, item in enumerate(batches):
        latents = item.batch.latents.to(device)
        images = len(item.batch.captions)
        for draw in range(config.validation.draws):
            generator = torch.Generator(device=device).manual_seed(seed + index * SEED_STRIDE + draw)
            loss = float(batch_loss(item.batch, latents, generator))
            totals[item.concept][0] += loss * images
            totals[item.concept][1] += images
    per_concept = {name: total / count for name, (total, count) in totals.items()}
    images = sum(count for _, count in totals.values()) / config.validation.draws
    overall = sum(total for total, _ in totals.values()) / max(1.0, sum(count for _, count in totals.values()))
    return ValidationEvent(step=step, epoch=epoch, loss=overall, concepts=per_concept, images=round(images),
                           seconds=round(time.perf_counter() - started, 3))

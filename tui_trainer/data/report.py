"""The dataset report: scanned concepts put into buckets and batches, with per-bucket counts and warnings."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui_trainer.config.enums import CaptionSource, ConceptType, RemainderPolicy
from tui_trainer.config.io import resolve_path
from tui_trainer.config.schema import TrainConfig, parse_resolution
from tui_trainer.data.buckets import (
    BatchCounts,
    BucketGrid,
    batch_bucket,
    batch_counts,
    bucket_grids,
    choose_bucket,
)
from tui_trainer.data.captions import read_prompts
from tui_trainer.data.items import ImageItem
from tui_trainer.data.scan import ScanCache, ScannedImage, SkippedFile, concept_label, scan_concept
from tui_trainer.models.families import family_spec


@dataclass
class BucketReport:
    """One bucket's counts per epoch."""

    width: int
    height: int
    aspect: float
    """width / height."""
    images: int
    """Images in the bucket, after repeats."""
    batches: int
    """Batches per epoch (of the effective batch size)."""
    dropped: int
    """Images not trained each epoch (remainder policy drop)."""
    repeated: int
    """Extra images used to fill the last batch (remainder policy repeat)."""
    warnings: list[str] = field(default_factory=list)


@dataclass
class DatasetReport:
    """Everything the CLI, the trainer and the TUI need to know about the dataset before training."""

    buckets: list[BucketReport]
    items: list[ImageItem]
    """Training items after repeats, each with its bucket."""
    total_images: int
    batches_per_epoch: int
    steps_per_epoch: int
    """Optimizer steps per epoch: ceil(batches_per_epoch / training.gradient_accumulation)."""
    total_steps: int
    """steps_per_epoch * epochs, capped by training.max_steps."""
    skipped: list[SkippedFile]
    warnings: list[str]
    errors: list[str]
    """Problems that make training impossible (missing or empty concept folder, no bucket fits, ...)."""
    effective_batch: int = 1
    """training.batch_size x distributed.num_processes: images per batch across all GPUs."""
    remainder: RemainderPolicy = RemainderPolicy.REPEAT
    epochs: int = 1
    validation_items: list[ImageItem] = field(default_factory=list)
    """Images of enabled validation concepts (bucketed, never trained, not in the counts)."""

    def to_json(self) -> dict[str, Any]:
        """The `tui-trainer buckets --json` document."""
        return {
            "buckets": [
                {
                    "width": bucket.width, "height": bucket.height, "aspect": round(bucket.aspect, 4),
                    "images": bucket.images, "batches": bucket.batches, "dropped": bucket.dropped,
                    "repeated": bucket.repeated, "warnings": list(bucket.warnings),
                }
                for bucket in self.buckets
            ],
            "total_images": self.total_images,
            "effective_batch": self.effective_batch,
            "remainder": self.remainder.value,
            "batches_per_epoch": self.batches_per_epoch,
            "steps_per_epoch": self.steps_per_epoch,
            "epochs": self.epochs,
            "total_steps": self.total_steps,
            "validation_images": len(self.validation_items),
            "skipped": [{"path": skipped.path, "reason": skipped.reason} for skipped in self.skipped],
            "warnings": list(self.warnings),
            "errors": list(self.errors),
        }


def cache_dir_of(config: TrainConfig, config_path: str | Path | None) -> Path:
    """The workspace cache folder (workspace.cache_dir, else <workspace.dir>/cache), absolute."""
    workspace = config.workspace
    return resolve_path(config_path, workspace.cache_dir or str(Path(workspace.dir) / "cache"))


def _bucket_setup(config: TrainConfig, resolution: str, step: int, errors: list[str], warnings: list[str]) -> list[BucketGrid]:
    training = config.training
    if training.bucket_min_side and training.bucket_max_side and training.bucket_min_side > training.bucket_max_side:
        errors.append(
            f"training.bucket_min_side {training.bucket_min_side} is above training.bucket_max_side "
            f"{training.bucket_max_side}; allowed: min <= max"
        )
        return []
    grids = bucket_grids(resolution, step, training.bucket_min_side, training.bucket_max_side, training.bucket_max_aspect)
    for grid in grids:
        if not grid.sizes:
            errors.append(
                f"resolution {resolution!r}: no bucket of side {grid.target_side} fits bucket_step {step}, "
                f"bucket_min_side {training.bucket_min_side}, bucket_max_side {training.bucket_max_side} and "
                f"bucket_max_aspect {training.bucket_max_aspect}; widen the side limits"
            )
    _, fixed = parse_resolution(resolution)
    if fixed and any(side % step for side in fixed):
        warnings.append(f"resolution {resolution!r} is not a multiple of the bucket step {step}; it is used as given")
    return grids if all(grid.sizes for grid in grids) else []


def _copies(images: list[ScannedImage], repeats: float, rng: random.Random) -> list[ScannedImage]:
    """The images after repeats: the whole part for every image, the fraction as a seeded random subset."""
    whole = int(repeats)
    extra = math.floor((repeats - whole) * len(images) + 0.5)
    chosen = sorted(rng.sample(range(len(images)), extra)) if extra else []
    return images * whole + [images[index] for index in chosen]


def _items(
    images: list[ScannedImage], concept_index: int, repeats: float, grids: list[BucketGrid], seed: int, prompts: tuple[str, ...]
) -> list[ImageItem]:
    rng = random.Random(f"{seed}:{concept_index}")
    buckets: dict[tuple[int, int], tuple[int, int]] = {}
    items = []
    for image in _copies(images, repeats, rng):
        size = (image.width, image.height)
        bucket = buckets.get(size)
        if bucket is None:
            bucket = buckets[size] = choose_bucket(grids, image.width, image.height)
        items.append(ImageItem(image.path, image.width, image.height, concept_index, image.mask_path, bucket, image.caption_file, prompts))
    return items


SMALL_BUCKET_WARNINGS: dict[RemainderPolicy, str] = {
    RemainderPolicy.DROP: "never trained: {images} < batch {batch}",
    RemainderPolicy.REPEAT: "{images} < batch {batch}: filled by {repeated}",
    RemainderPolicy.PARTIAL: "{images} < batch {batch}: trained as one smaller batch",
}
"""The warning of a bucket with fewer images than one batch, per remainder policy."""


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _bucket_warnings(images: int, batch: int, counts: BatchCounts, remainder: RemainderPolicy, upscaled: int, processes: int) -> list[str]:
    warnings = []
    if images < batch:
        warnings.append(SMALL_BUCKET_WARNINGS[remainder].format(images=_count(images, "image"), batch=batch, repeated=_count(counts.repeated, "repeat")))
    elif counts.dropped:
        warnings.append(f"{_count(counts.dropped, 'image')} dropped each epoch")
    if remainder is RemainderPolicy.PARTIAL and processes > 1 and 0 < counts.last_batch < processes:
        warnings.append(f"last batch of {_count(counts.last_batch, 'image')} cannot be split over {processes} processes")
    if upscaled:
        warnings.append(f"{_count(upscaled, 'image')} smaller than the bucket (upscaled)")
    return warnings


def bucket_reports(items: list[ImageItem], batch: int, remainder: RemainderPolicy, processes: int = 1) -> list[BucketReport]:
    """Per-bucket counts of training items, sorted from the tallest to the widest bucket."""
    groups: dict[tuple[int, int], list[ImageItem]] = defaultdict(list)
    for item in items:
        groups[item.bucket].append(item)
    reports = []
    for (width, height), members in sorted(groups.items(), key=lambda entry: (entry[0][0] / entry[0][1], entry[0])):
        counts = batch_counts(len(members), batch, remainder)
        upscaled = sum(1 for item in members if item.width < width or item.height < height)
        reports.append(
            BucketReport(
                width, height, width / height, len(members), counts.batches, counts.dropped, counts.repeated,
                _bucket_warnings(len(members), batch, counts, remainder, upscaled, processes),
            )
        )
    return reports


def build_report(config: TrainConfig, config_path: str | Path | None = None, *, use_cache: bool = True) -> DatasetReport:
    """Scan every enabled concept, bucket its images and count batches and steps; problems go into the report.

    Only enabled concepts of type train are counted; enabled validation concepts are scanned (their bad files
    and errors are reported) and bucketed into `validation_items`. With use_cache, file facts are kept in
    <cache dir>/scan/ so an unchanged folder is rescanned at about os.stat speed.
    """
    training = config.training
    effective_batch = training.batch_size * config.distributed.num_processes
    step = training.bucket_step or family_spec(config.model.family).bucket_step
    cache_dir = cache_dir_of(config, config_path) if use_cache else None
    errors: list[str] = []
    warnings: list[str] = []
    skipped: list[SkippedFile] = []
    items: list[ImageItem] = []
    validation_items: list[ImageItem] = []
    grids_by_resolution: dict[str, list[BucketGrid]] = {}

    for index, concept in enumerate(config.concepts):
        if not concept.enabled:
            continue
        resolution = concept.resolution or training.resolution
        if resolution not in grids_by_resolution:
            grids_by_resolution[resolution] = _bucket_setup(config, resolution, step, errors, warnings)
        folder = resolve_path(config_path, concept.path).absolute()
        prompts: tuple[str, ...] = ()
        if concept.caption_source is CaptionSource.PROMPTS_FILE and folder.is_dir():
            prompts, error = read_prompts(concept, resolve_path(config_path, concept.prompts_file) if concept.prompts_file else None)
            if error:
                errors.append(f"{concept_label(concept, index)}: {error}")
                continue
        scan = scan_concept(concept, folder, ScanCache.for_folder(cache_dir, str(folder)), index)
        skipped += scan.skipped
        warnings += scan.warnings
        errors += scan.errors
        grids = grids_by_resolution[resolution]
        if grids and scan.images:
            target = items if concept.type is ConceptType.TRAIN else validation_items
            concept_items = _items(scan.images, index, concept.repeats, grids, training.seed, prompts)
            if not concept_items:
                warnings.append(f"concept {concept.name!r} (concepts[{index}].repeats): repeats {concept.repeats} x {len(scan.images)} images leaves no image")
            target += concept_items

    if not any(concept.enabled and concept.type is ConceptType.TRAIN for concept in config.concepts):
        errors.append("concepts: no enabled concept of type 'train'; add a [[concepts]] table with a folder of images")
    buckets = bucket_reports(items, effective_batch, training.bucket_remainder, config.distributed.num_processes)
    warnings += [f"bucket {bucket.width}x{bucket.height}: {warning}" for bucket in buckets for warning in bucket.warnings]
    batches = sum(bucket.batches for bucket in buckets)
    steps_per_epoch = math.ceil(batches / training.gradient_accumulation)
    total_steps = steps_per_epoch * training.epochs
    if training.max_steps is not None:
        total_steps = min(total_steps, training.max_steps)
    return DatasetReport(
        buckets, items, len(items), batches, steps_per_epoch, total_steps, skipped, warnings, errors,
        effective_batch, training.bucket_remainder, training.epochs, validation_items,
    )


def plan_epoch(report: DatasetReport, epoch: int, seed: int, batch_size: int, remainder: RemainderPolicy) -> list[list[ImageItem]]:
    """The batches of one epoch, each from one bucket, in a shuffled order fixed by (seed, epoch).

    batch_size is the effective batch (report.effective_batch: batch size x processes; each process takes
    its slice of every batch). With the report's batch size and remainder policy the batch count per
    bucket equals the report's.
    """
    rng = random.Random(f"{seed}:epoch:{epoch}")
    groups: dict[tuple[int, int], list[ImageItem]] = defaultdict(list)
    for item in report.items:
        groups[item.bucket].append(item)
    batches = [batch for bucket in sorted(groups) for batch in batch_bucket(groups[bucket], batch_size, remainder, rng)]
    rng.shuffle(batches)
    return batches


def format_report(report: DatasetReport) -> str:
    """The `tui-trainer buckets` table and totals as plain text (errors are left to the caller)."""
    rows = [("bucket", "aspect", "images", "batches", "dropped", "repeated", "warnings")]
    rows += [
        (f"{b.width}x{b.height}", f"{b.aspect:.2f}", str(b.images), str(b.batches), str(b.dropped), str(b.repeated), "; ".join(b.warnings))
        for b in report.buckets
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(6)]
    lines = [
        "  ".join([row[0].ljust(widths[0]), *(cell.rjust(width) for cell, width in zip(row[1:6], widths[1:])), row[6]]).rstrip()
        for row in rows
    ]
    lines += [
        "",
        f"images {report.total_images} (after repeats)  batch {report.effective_batch}  remainder {report.remainder.value}",
        f"batches/epoch {report.batches_per_epoch}  steps/epoch {report.steps_per_epoch}  "
        f"epochs {report.epochs}  total steps {report.total_steps}",
    ]
    if report.validation_items:
        lines.append(f"validation images {len(report.validation_items)} (not trained)")
    if report.skipped:
        lines.append(f"skipped {_count(len(report.skipped), 'file')}:")
        lines += [f"  {skipped.path}: {skipped.reason}" for skipped in report.skipped]
    in_table = {f"bucket {b.width}x{b.height}: {warning}" for b in report.buckets for warning in b.warnings}
    other_warnings = [warning for warning in report.warnings if warning not in in_table]
    if other_warnings:
        lines.append("warnings:")
        lines += [f"  {warning}" for warning in other_warnings]
    return "\n".join(lines) + "\n"

"""Aspect-ratio buckets: the bucket set, nearest-bucket choice and per-bucket batching. Pure functions.

The algorithm, with a worked example, is in docs/buckets.md.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from tui_trainer.config.enums import RemainderPolicy
from tui_trainer.config.schema import parse_resolution

T = TypeVar("T")


@dataclass(frozen=True)
class BucketGrid:
    """The buckets of one target resolution, sorted by aspect ratio (width / height)."""

    target_side: int
    """The target side whose square area every bucket approximates (0 for a fixed WxH resolution)."""
    sizes: tuple[tuple[int, int], ...]
    """(width, height) of every bucket, sorted by log aspect ratio."""
    log_aspects: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "log_aspects", tuple(math.log(w / h) for w, h in self.sizes))

    def nearest(self, width: int, height: int) -> tuple[int, int]:
        """The bucket whose log aspect ratio is nearest to the image's; ties go to the squarer bucket."""
        target = math.log(width / height)
        index = bisect.bisect_left(self.log_aspects, target)
        candidates = [i for i in (index - 1, index) if 0 <= i < len(self.sizes)]
        best = min(candidates, key=lambda i: (abs(self.log_aspects[i] - target), abs(self.log_aspects[i])))
        return self.sizes[best]


def bucket_sizes(target_side: int, step: int, min_side: int, max_side: int, max_aspect: float) -> list[tuple[int, int]]:
    """Buckets of about target_side**2 area: sides multiples of `step` in [min_side, max_side], long/short <= max_aspect.

    The square bucket is the largest multiple of `step` not above the target side. For every long side `w`
    (a multiple of `step`) the short side is the largest multiple of `step` with w * h <= target area;
    each such landscape bucket also gives its portrait twin. So no bucket's area exceeds the target area,
    and each is within one step (of its short side) of it.
    """
    area = target_side * target_side
    square = target_side // step * step
    sizes: set[tuple[int, int]] = set()
    if square >= step and min_side <= square <= max_side:
        sizes.add((square, square))
    long_side = square + step
    while long_side <= max_side:
        short_side = area // long_side // step * step
        if short_side < step or short_side < min_side or long_side / short_side > max_aspect:
            break
        sizes.update(((long_side, short_side), (short_side, long_side)))
        long_side += step
    return sorted(sizes, key=lambda size: (math.log(size[0] / size[1]), -size[0] * size[1]))


def bucket_grids(
    resolution: str, step: int, min_side: int | None, max_side: int | None, max_aspect: float
) -> list[BucketGrid]:
    """One grid per target side of `resolution` (ascending), or one single-bucket grid for a fixed WxH.

    Absent min/max sides default to half / twice each target side. A fixed WxH is used exactly as given.
    """
    sides, fixed = parse_resolution(resolution)
    if fixed is not None:
        return [BucketGrid(0, (fixed,))]
    grids = []
    for side in sorted(set(sides)):
        low = min_side if min_side is not None else side // 2
        high = max_side if max_side is not None else side * 2
        grids.append(BucketGrid(side, tuple(bucket_sizes(side, step, low, high, max_aspect))))
    return grids


def choose_bucket(grids: Sequence[BucketGrid], width: int, height: int) -> tuple[int, int]:
    """The bucket of an image among the grids of one resolution setting (sorted by target side).

    With several target sides the image takes the largest side whose square area is not above the image's
    own area (so it is not upscaled on average); an image smaller than every target takes the smallest.
    Within that grid it takes the nearest-aspect bucket.
    """
    area = width * height
    fitting = [grid for grid in grids if grid.target_side * grid.target_side <= area]
    grid = fitting[-1] if fitting else grids[0]
    return grid.nearest(width, height)


@dataclass(frozen=True)
class BatchCounts:
    """How one bucket's images split into batches per epoch."""

    batches: int
    dropped: int
    repeated: int
    last_batch: int
    """Images in the last batch (equal to the batch size unless the policy is partial)."""


def batch_counts(images: int, batch_size: int, remainder: RemainderPolicy) -> BatchCounts:
    """Batches of one bucket: full batches, then the remainder by policy (drop, repeat to fill, or partial)."""
    full, rest = divmod(images, batch_size)
    if rest == 0:
        return BatchCounts(full, 0, 0, batch_size if full else 0)
    policies = {
        RemainderPolicy.DROP: BatchCounts(full, rest, 0, batch_size if full else 0),
        RemainderPolicy.REPEAT: BatchCounts(full + 1, 0, batch_size - rest, batch_size),
        RemainderPolicy.PARTIAL: BatchCounts(full + 1, 0, 0, rest),
    }
    return policies[remainder]


def batch_bucket(items: Sequence[T], batch_size: int, remainder: RemainderPolicy, rng: random.Random) -> list[list[T]]:
    """Shuffle one bucket's items and cut them into batches as `batch_counts` says.

    `repeat` fills the last batch with other images of the bucket (cycling when the bucket is smaller than
    a batch); `drop` leaves out the last, incomplete batch (different images each epoch, as the order is shuffled).
    """
    order = list(items)
    rng.shuffle(order)
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    if not batches or len(batches[-1]) == batch_size:
        return batches
    last = batches[-1]
    if remainder is RemainderPolicy.DROP:
        return batches[:-1]
    if remainder is RemainderPolicy.REPEAT:
        others = order[: len(order) - len(last)] or order
        fill: list[T] = []
        while len(fill) < batch_size - len(last):
            fill += rng.sample(others, min(len(others), batch_size - len(last) - len(fill)))
        last.extend(fill)
    return batches

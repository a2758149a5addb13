"""Bucket derivation, nearest-bucket choice and batching: exact cases and hypothesis properties."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import astuple
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tui_trainer.config.enums import RemainderPolicy
from tui_trainer.data.buckets import batch_bucket, batch_counts, bucket_grids, bucket_sizes, choose_bucket
from tui_trainer.data.items import ImageItem
from tui_trainer.data.report import bucket_reports

POLICIES = list(RemainderPolicy)


def test_sd15_512_step_8_edges():
    sizes = bucket_sizes(512, 8, 256, 1024, 2.0)
    assert (512, 512) in sizes and (720, 360) in sizes and (360, 720) in sizes
    assert (728, 360) not in sizes and len(sizes) == 53
    assert sizes[0] == (360, 720) and sizes[-1] == (720, 360)


def test_sdxl_1024_step_64_matches_the_usual_sdxl_buckets():
    assert bucket_sizes(1024, 64, 512, 2048, 2.0) == [
        (704, 1408), (768, 1344), (768, 1280), (832, 1216), (896, 1152), (960, 1088), (1024, 1024),
        (1088, 960), (1152, 896), (1216, 832), (1280, 768), (1344, 768), (1408, 704),
    ]


def test_nearest_bucket_uses_log_aspect():
    grid = bucket_grids("64", 8, None, None, 2.0)[0]
    assert grid.sizes == ((48, 80), (56, 72), (64, 64), (72, 56), (80, 48))
    assert grid.nearest(96, 64) == (80, 48)
    assert grid.nearest(1000, 10) == (80, 48) and grid.nearest(10, 1000) == (48, 80)
    assert grid.nearest(114, 100) == (72, 56), "in log terms 1.14 is nearer 72/56 = 1.286 than 1, though 1.14 - 1 < 1.286 - 1.14"


def test_min_max_side_and_aspect_limit_the_set():
    assert bucket_sizes(512, 64, 448, 576, 4.0) == [(448, 576), (512, 512), (576, 448)]
    assert bucket_sizes(512, 64, 64, 4096, 1.0) == [(512, 512)]
    assert bucket_sizes(64, 128, 32, 128, 2.0) == []


def test_batch_counts_per_policy():
    assert astuple(batch_counts(3, 2, RemainderPolicy.REPEAT)) == (2, 0, 1, 2)
    assert astuple(batch_counts(3, 2, RemainderPolicy.DROP)) == (1, 1, 0, 2)
    assert astuple(batch_counts(3, 2, RemainderPolicy.PARTIAL)) == (2, 0, 0, 1)
    assert astuple(batch_counts(1, 4, RemainderPolicy.DROP)) == (0, 1, 0, 0)
    assert astuple(batch_counts(8, 4, RemainderPolicy.REPEAT)) == (2, 0, 0, 4)


target_sides = st.integers(8, 256).map(lambda n: n * 8)
steps = st.sampled_from([8, 16, 32, 64, 128])
aspects = st.floats(1.0, 4.0)


@given(target_sides, steps, aspects)
def test_bucket_sides_are_step_multiples_and_areas_near_the_target(side: int, step: int, max_aspect: float):
    sizes = bucket_sizes(side, step, side // 2, side * 2, max_aspect)
    assert len(set(sizes)) == len(sizes)
    for width, height in sizes:
        assert width % step == 0 and height % step == 0
        assert width * height <= side * side, "no bucket exceeds the target area"
        if width == height:
            assert width > side - step, "the square bucket is the largest step multiple not above the side"
        else:
            assert max(width, height) * (min(width, height) + step) > side * side, "one more step would exceed the area"
        assert max(width, height) / min(width, height) <= max_aspect
        assert side // 2 <= min(width, height) and max(width, height) <= side * 2
        assert (height, width) in sizes


image_sizes = st.lists(st.tuples(st.integers(1, 4000), st.integers(1, 4000)), min_size=1, max_size=60)
resolutions = st.sampled_from(["512", "512,768", "256,512,1024", "768x512", "1024"])


@settings(max_examples=60)
@given(image_sizes, resolutions, steps, st.integers(1, 8), st.sampled_from(POLICIES))
def test_every_image_is_in_exactly_one_bucket_and_counts_add_up(sizes, resolution, step, batch, remainder):
    grids = bucket_grids(resolution, step, None, None, 2.0)
    all_buckets = {size for grid in grids for size in grid.sizes}
    items = [
        ImageItem(Path(f"{index}.png"), width, height, 0, None, choose_bucket(grids, width, height))
        for index, (width, height) in enumerate(sizes)
    ]
    assert all(item.bucket in all_buckets for item in items)
    reports = bucket_reports(items, batch, remainder)
    assert sum(report.images for report in reports) == len(items)
    assert Counter(item.bucket for item in items) == {(r.width, r.height): r.images for r in reports}
    for report in reports:
        counts = batch_counts(report.images, batch, remainder)
        assert report.batches * batch + report.dropped - report.repeated == report.images or (
            remainder is RemainderPolicy.PARTIAL and (report.batches - 1) * batch + counts.last_batch == report.images
        )


@settings(max_examples=60)
@given(st.integers(0, 60), st.integers(1, 9), st.sampled_from(POLICIES), st.integers(0, 10**6))
def test_batch_bucket_matches_batch_counts(images: int, batch: int, remainder: RemainderPolicy, seed: int):
    counts = batch_counts(images, batch, remainder)
    batches = batch_bucket(list(range(images)), batch, remainder, random.Random(seed))
    assert len(batches) == counts.batches
    used = Counter(member for chunk in batches for member in chunk)
    assert sum(used.values()) == images - counts.dropped + counts.repeated
    assert all(len(chunk) == batch for chunk in batches[:-1])
    if batches:
        assert len(batches[-1]) == counts.last_batch
    if remainder is not RemainderPolicy.DROP:
        assert set(used) == set(range(images)), "every image is trained each epoch"

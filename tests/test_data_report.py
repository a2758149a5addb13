"""build_report and plan_epoch on hand-made datasets: exact buckets, counts, steps and warnings."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from tui_trainer.config import config_from_dict
from tui_trainer.config.enums import RemainderPolicy
from tui_trainer.data import build_report, plan_epoch, read_captions
from tui_trainer.devkit.datasets import make_dataset, make_exif_rotated


def make_config(tmp_path: Path, concepts: list[dict], **training):
    document = {
        "model": {"base_model": "x"},
        "workspace": {"dir": str(tmp_path / "ws")},
        "training": {"resolution": "64", "epochs": 10, **training},
        "concepts": concepts,
    }
    return config_from_dict(document), tmp_path / "config.toml"


def table(report) -> list[tuple]:
    return [(b.width, b.height, b.images, b.batches, b.dropped, b.repeated, b.warnings) for b in report.buckets]


@pytest.mark.parametrize(
    ("remainder", "expected_bucket", "steps_per_epoch"),
    [
        ("repeat", (64, 64, 3, 2, 0, 1, []), 2),
        ("drop", (64, 64, 3, 1, 1, 0, ["1 image dropped each epoch"]), 1),
        ("partial", (64, 64, 3, 2, 0, 0, []), 2),
    ],
)
def test_three_images_at_batch_two(tmp_path: Path, remainder: str, expected_bucket: tuple, steps_per_epoch: int):
    make_dataset(tmp_path / "ds", [(64, 64, 3)])
    config, path = make_config(tmp_path, [{"name": "dog", "path": "ds"}], batch_size=2, bucket_remainder=remainder)
    report = build_report(config, path)
    assert report.errors == [] and report.skipped == []
    assert table(report) == [expected_bucket]
    assert (report.total_images, report.steps_per_epoch, report.total_steps) == (3, steps_per_epoch, steps_per_epoch * 10)
    batches = plan_epoch(report, 0, 42, report.effective_batch, report.remainder)
    sizes = sorted(len(batch) for batch in batches)
    assert sizes == {"repeat": [2, 2], "drop": [2], "partial": [1, 2]}[remainder]


def test_bucket_below_batch_size(tmp_path: Path):
    make_dataset(tmp_path / "ds", [(64, 64, 4), (60, 100, 1), (96, 64, 2)])
    concepts = [{"name": "mixed", "path": "ds"}]
    drop = build_report(*make_config(tmp_path, concepts, batch_size=4, bucket_remainder="drop"))
    assert table(drop) == [
        (48, 80, 1, 0, 1, 0, ["never trained: 1 image < batch 4"]),
        (64, 64, 4, 1, 0, 0, []),
        (80, 48, 2, 0, 2, 0, ["never trained: 2 images < batch 4"]),
    ]
    assert drop.steps_per_epoch == 1
    assert "bucket 48x80: never trained: 1 image < batch 4" in drop.warnings
    repeat = build_report(*make_config(tmp_path, concepts, batch_size=4))
    assert table(repeat) == [
        (48, 80, 1, 1, 0, 3, ["1 image < batch 4: filled by 3 repeats"]),
        (64, 64, 4, 1, 0, 0, []),
        (80, 48, 2, 1, 0, 2, ["2 images < batch 4: filled by 2 repeats"]),
    ]
    lonely = [batch for batch in plan_epoch(repeat, 0, 1, 4, RemainderPolicy.REPEAT) if batch[0].bucket == (48, 80)]
    assert len(lonely) == 1 and len(lonely[0]) == 4 and len({item.path for item in lonely[0]}) == 1


def test_exif_rotated_portrait_goes_to_a_portrait_bucket(tmp_path: Path):
    folder = tmp_path / "ds"
    folder.mkdir()
    make_exif_rotated(folder / "rotated.jpg", 96, 64, orientation=6)
    make_exif_rotated(folder / "upright.jpg", 96, 64, orientation=1)
    config, path = make_config(tmp_path, [{"name": "photos", "path": "ds", "caption_source": "filename"}])
    report = build_report(config, path)
    by_name = {item.path.name: item for item in report.items}
    assert (by_name["rotated.jpg"].width, by_name["rotated.jpg"].height, by_name["rotated.jpg"].bucket) == (64, 96, (48, 80))
    assert (by_name["upright.jpg"].width, by_name["upright.jpg"].height, by_name["upright.jpg"].bucket) == (96, 64, (80, 48))
    assert read_captions(report.items, config.concepts).of(by_name["rotated.jpg"]) == ("rotated",)


def test_multi_resolution_takes_the_largest_target_not_above_the_image_area(tmp_path: Path):
    make_dataset(tmp_path / "ds", [(128, 128, 1), (130, 130, 1), (100, 100, 1), (64, 64, 1), (40, 40, 1), (256, 128, 1)])
    config, path = make_config(tmp_path, [{"name": "multi", "path": "ds"}], resolution="64,128", batch_size=1)
    report = build_report(config, path)
    by_size = {(item.width, item.height): item.bucket for item in report.items}
    assert by_size == {
        (128, 128): (128, 128),
        (130, 130): (128, 128),
        (100, 100): (64, 64),
        (64, 64): (64, 64),
        (40, 40): (64, 64),
        (256, 128): (176, 88),
    }
    assert table(report) == [
        (64, 64, 3, 3, 0, 0, ["1 image smaller than the bucket (upscaled)"]),
        (128, 128, 2, 2, 0, 0, []),
        (176, 88, 1, 1, 0, 0, []),
    ]


def test_fixed_resolution_puts_every_image_in_one_bucket(tmp_path: Path):
    make_dataset(tmp_path / "ds", [(64, 64, 2), (96, 64, 1)])
    report = build_report(*make_config(tmp_path, [{"name": "a", "path": "ds"}], resolution="96x64", batch_size=3))
    assert table(report) == [(96, 64, 3, 1, 0, 0, ["2 images smaller than the bucket (upscaled)"])]


def test_repeats_accumulation_processes_and_max_steps(tmp_path: Path):
    make_dataset(tmp_path / "a", [(64, 64, 4)])
    make_dataset(tmp_path / "b", [(64, 64, 4)], seed=1)
    make_dataset(tmp_path / "v", [(64, 64, 2)], seed=2)
    concepts = [
        {"name": "twice", "path": "a", "repeats": 2},
        {"name": "half", "path": "b", "repeats": 0.5},
        {"name": "val", "path": "v", "type": "validation"},
        {"name": "off", "path": "missing", "enabled": False},
    ]
    document_training = {"batch_size": 2, "gradient_accumulation": 3, "max_steps": 15}
    config, path = make_config(tmp_path, concepts, **document_training)
    config.distributed.num_processes = 2
    report = build_report(config, path)
    assert report.errors == []
    assert Counter(item.concept_index for item in report.items) == {0: 8, 1: 2}
    assert len(report.validation_items) == 2 and report.validation_items[0].concept_index == 2
    assert report.effective_batch == 4
    assert table(report) == [(64, 64, 10, 3, 0, 2, [])]
    assert (report.batches_per_epoch, report.steps_per_epoch, report.total_steps) == (3, 1, 10)
    config.training.epochs = 20
    assert build_report(config, path).total_steps == 15


def test_prompts_file_prefix_suffix_and_masks(tmp_path: Path):
    make_dataset(tmp_path / "ds", [(64, 64, 3)], captions=False, masks=True)
    (tmp_path / "prompts.txt").write_text("a photo\n\n  a   drawing \n")
    concepts = [{
        "name": "p", "path": "ds", "caption_source": "prompts_file", "prompts_file": "prompts.txt",
        "caption_prefix": "sks, ", "caption_suffix": ", hd",
    }]
    config, path = make_config(tmp_path, concepts)
    report = build_report(config, path)
    assert report.total_images == 3 and report.warnings == []
    captions = read_captions(report.items, config.concepts)
    for item in report.items:
        assert item.caption_choices == ("sks, a photo, hd", "sks, a drawing, hd")
        assert captions.of(item) == item.caption_choices
        assert item.mask_path == item.path.with_name(item.path.stem + "-masklabel.png")


def test_missing_and_empty_concept_folders_are_errors_naming_the_concept(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.md").write_text("no images here")
    concepts = [{"name": "ghost", "path": "nowhere"}, {"name": "hollow", "path": "empty"}]
    report = build_report(*make_config(tmp_path, concepts))
    assert report.errors == [
        f"concept 'ghost' (concepts[0]): folder '{tmp_path / 'nowhere'}' does not exist",
        f"concept 'hollow' (concepts[1]): folder '{tmp_path / 'empty'}' has no usable images; "
        "allowed extensions: .bmp, .jpeg, .jpg, .png, .webp",
    ]
    assert report.buckets == [] and report.steps_per_epoch == 0


def test_no_train_concept_is_an_error(tmp_path: Path):
    make_dataset(tmp_path / "v", [(64, 64, 1)])
    report = build_report(*make_config(tmp_path, [{"name": "val", "path": "v", "type": "validation"}]))
    assert report.errors == ["concepts: no enabled concept of type 'train'; add a [[concepts]] table with a folder of images"]


def test_plan_epoch_is_deterministic_and_differs_between_epochs(tmp_path: Path):
    make_dataset(tmp_path / "ds", [(64, 64, 9), (96, 64, 5)])
    report = build_report(*make_config(tmp_path, [{"name": "a", "path": "ds"}], batch_size=2))
    plan = [[item.path for item in batch] for batch in plan_epoch(report, 3, 7, 2, RemainderPolicy.REPEAT)]
    again = [[item.path for item in batch] for batch in plan_epoch(report, 3, 7, 2, RemainderPolicy.REPEAT)]
    other = [[item.path for item in batch] for batch in plan_epoch(report, 4, 7, 2, RemainderPolicy.REPEAT)]
    assert plan == again and plan != other
    assert len(plan) == report.batches_per_epoch == 8
    with Image.open(report.items[0].path) as image:
        assert image.size == (report.items[0].width, report.items[0].height)


def test_json_shape(tmp_path: Path):
    make_dataset(tmp_path / "ds", [(64, 64, 3)], broken=["zero_byte"])
    report = build_report(*make_config(tmp_path, [{"name": "a", "path": "ds"}], batch_size=2))
    document = report.to_json()
    assert document["buckets"] == [
        {"width": 64, "height": 64, "aspect": 1.0, "images": 3, "batches": 2, "dropped": 0, "repeated": 1, "warnings": []}
    ]
    assert (document["total_images"], document["steps_per_epoch"], document["total_steps"]) == (3, 2, 20)
    assert document["skipped"] == [{"path": str(tmp_path / "ds" / "broken_zero_byte.png"), "reason": "empty file (0 bytes)"}]
    assert document["warnings"] == [] and document["errors"] == []


def test_bucket_limit_errors_and_fixed_size_off_the_step(tmp_path: Path):
    make_dataset(tmp_path / "ds", [(64, 64, 1)])
    concepts = [{"name": "a", "path": "ds"}]
    crossed = build_report(*make_config(tmp_path, concepts, bucket_min_side=512, bucket_max_side=256))
    assert crossed.errors == ["training.bucket_min_side 512 is above training.bucket_max_side 256; allowed: min <= max"]
    assert crossed.items == []
    off_step = build_report(*make_config(tmp_path, concepts, resolution="96x72", bucket_step=64))
    assert off_step.warnings == [
        "resolution '96x72' is not a multiple of the bucket step 64; it is used as given",
        "bucket 96x72: 1 image smaller than the bucket (upscaled)",
    ]
    assert [item.bucket for item in off_step.items] == [(96, 72)]

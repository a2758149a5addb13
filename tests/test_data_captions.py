"""Caption text, read when training starts (read_captions), never by the scan: every caption source, bad files."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tui_trainer.config import config_from_dict
from tui_trainer.data import build_report, read_captions
from tui_trainer.data import scan as scan_module
from tui_trainer.data.scan import ScanCache
from tui_trainer.devkit.datasets import make_dataset


def make_config(tmp_path: Path, **concept):
    document = {
        "model": {"base_model": "x"},
        "workspace": {"dir": str(tmp_path / "ws")},
        "training": {"resolution": "64", "batch_size": 1},
        "concepts": [{"name": "c", "path": "ds", **concept}],
    }
    return config_from_dict(document), tmp_path / "config.toml"


def captions_by_name(tmp_path: Path, **concept) -> tuple[dict[str, tuple[str, ...]], list]:
    """({image name: caption choices}, caption warnings) of the concept folder tmp_path/ds, through build_report."""
    config, path = make_config(tmp_path, **concept)
    report = build_report(config, path)
    assert report.errors == []
    captions = read_captions(report.items, config.concepts)
    return {item.path.name: captions.of(item) for item in report.items}, captions.warnings


def test_txt_caption_with_prefix_suffix_and_collapsed_whitespace(tmp_path: Path):
    folder = make_dataset(tmp_path / "ds", [(64, 64, 2)])
    (folder / "img_0000_64x64.txt").write_text("  red,\n\t dog  \n")
    (folder / "img_0001_64x64.txt").unlink()
    captions, warnings = captions_by_name(tmp_path, caption_prefix="sks, ", caption_suffix=" !", repeats=2)
    assert captions == {"img_0000_64x64.png": ("sks, red, dog !",), "img_0001_64x64.png": ("sks,  !",)}
    assert warnings == []


def test_filename_captions(tmp_path: Path):
    make_dataset(tmp_path / "ds", [(64, 64, 1)], captions=False)
    (tmp_path / "ds" / "img_0000_64x64.png").rename(tmp_path / "ds" / "a  red dog.PNG")
    captions, _ = captions_by_name(tmp_path, caption_source="filename", caption_prefix="sks ")
    assert captions == {"a  red dog.PNG": ("sks a red dog",)}


def test_caption_that_is_not_utf8_is_replaced_and_named_in_one_warning(tmp_path: Path):
    folder = make_dataset(tmp_path / "ds", [(64, 64, 3)])
    for index in (0, 2):
        (folder / f"img_000{index}_64x64.txt").write_bytes(b"caf\xe9, dog")
    captions, warnings = captions_by_name(tmp_path, repeats=2)
    assert captions["img_0000_64x64.png"] == ("caf\ufffd, dog",)
    bad = [str(folder / "img_0000_64x64.txt"), str(folder / "img_0002_64x64.txt")]
    assert [(warning.message, warning.paths) for warning in warnings] == [(
        f"concept 'c' (concepts[0]): 2 caption files are not UTF-8 ({bad[0]!r}, {bad[1]!r}); bad bytes were replaced", bad,
    )]


def test_caption_file_that_cannot_be_read_trains_with_prefix_and_suffix(tmp_path: Path):
    folder = make_dataset(tmp_path / "ds", [(64, 64, 2)])
    (folder / "img_0001_64x64.txt").unlink()
    (folder / "img_0001_64x64.txt").mkdir()
    captions, warnings = captions_by_name(tmp_path, caption_prefix="sks")
    assert captions["img_0001_64x64.png"] == ("sks",)
    bad = str(folder / "img_0001_64x64.txt")
    assert [(warning.message, warning.paths) for warning in warnings] == [(
        f"concept 'c' (concepts[0]): 1 caption files cannot be read ({bad!r}): Is a directory; "
        "those images train with only the caption prefix/suffix", [bad],
    )]


def test_caption_edited_after_a_warm_scan_is_read_fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The scan never reads captions, so a remembered scan result cannot hold an old caption."""
    folder = make_dataset(tmp_path / "ds", [(64, 64, 2)])
    when = time.time() - 60
    for path in [folder, *folder.iterdir()]:
        os.utime(path, (when, when))
    config, path = make_config(tmp_path)
    ScanCache._memos.clear()
    build_report(config, path)
    reads: list[str] = []
    real = scan_module.read_image_facts
    monkeypatch.setattr(scan_module, "read_image_facts", lambda image, limit: reads.append(image) or real(image, limit))
    caption = folder / "img_0001_64x64.txt"
    caption.write_text("edited, in place")
    os.utime(caption, (when, when))
    report = build_report(config, path)
    assert reads == [] and len(ScanCache._memos) == 1, "the folder's scan is the remembered one"
    by_name = {item.path.name: item for item in report.items}
    assert read_captions(report.items, config.concepts).of(by_name["img_0001_64x64.png"]) == ("edited, in place",)


def test_prompts_file_lines_and_its_errors_name_the_concept(tmp_path: Path):
    make_dataset(tmp_path / "ds", [(64, 64, 2)], captions=False)
    (tmp_path / "prompts.txt").write_text("a photo\n\n  a   drawing \n")
    captions, _ = captions_by_name(tmp_path, caption_source="prompts_file", prompts_file="prompts.txt", caption_suffix=", hd")
    assert set(captions.values()) == {("a photo, hd", "a drawing, hd")}
    (tmp_path / "empty.txt").write_text("\n \n")
    for prompts, error in (
        ({"prompts_file": "missing.txt"}, f"prompts_file {str(tmp_path / 'missing.txt')!r} cannot be read: No such file or directory"),
        ({"prompts_file": "empty.txt"}, f"prompts_file {str(tmp_path / 'empty.txt')!r} has no captions (one per line)"),
    ):
        report = build_report(*make_config(tmp_path, caption_source="prompts_file", **prompts))
        assert report.errors == [f"concept 'c' (concepts[0]): {error}"] and report.items == []

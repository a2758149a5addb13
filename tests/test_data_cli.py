"""`tui-trainer buckets CONFIG [--json]`, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tui_trainer.devkit.datasets import make_dataset

CONFIG = """\
[model]
base_model = "x"
[training]
resolution = "64"
batch_size = 2
epochs = 5
[[concepts]]
name = "dog"
path = "ds"
"""


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui_trainer.cli", *args], capture_output=True, text=True, cwd=cwd)


def write_project(tmp_path: Path, config: str = CONFIG) -> Path:
    make_dataset(tmp_path / "ds", [(64, 64, 3), (60, 100, 1)], broken=["zero_byte", "not_an_image"])
    (tmp_path / "c.toml").write_text(config)
    return tmp_path / "c.toml"


def test_buckets_table(tmp_path: Path):
    write_project(tmp_path)
    result = run_cli("buckets", "c.toml", cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == ""
    ds = tmp_path / "ds"
    assert result.stdout == f"""\
bucket  aspect  images  batches  dropped  repeated  warnings
48x80     0.60       1        1        0         1  1 image < batch 2: filled by 1 repeat
64x64     1.00       3        2        0         1

images 4 (after repeats)  batch 2  remainder repeat
batches/epoch 3  steps/epoch 3  epochs 5  total steps 15
skipped 2 files:
  {ds}/broken_not_an_image.png: not an image: content is not PNG, JPEG, WebP or BMP
  {ds}/broken_zero_byte.png: empty file (0 bytes)
"""
    assert len(list((tmp_path / "workspace" / "cache" / "scan").glob("*.marshal"))) == 1


def test_buckets_json(tmp_path: Path):
    write_project(tmp_path, CONFIG.replace("batch_size = 2", 'batch_size = 2\nbucket_remainder = "drop"'))
    result = run_cli("buckets", "c.toml", "--json", cwd=tmp_path)
    assert result.returncode == 0
    document = json.loads(result.stdout)
    assert [{key: bucket[key] for key in ("width", "height", "images", "batches", "dropped", "repeated")} for bucket in document["buckets"]] == [
        {"width": 48, "height": 80, "images": 1, "batches": 0, "dropped": 1, "repeated": 0},
        {"width": 64, "height": 64, "images": 3, "batches": 1, "dropped": 1, "repeated": 0},
    ]
    assert (document["total_images"], document["steps_per_epoch"], document["total_steps"]) == (4, 1, 5)
    assert document["skipped"] == [
        {"path": str(tmp_path / "ds" / "broken_not_an_image.png"), "reason": "not an image: content is not PNG, JPEG, WebP or BMP"},
        {"path": str(tmp_path / "ds" / "broken_zero_byte.png"), "reason": "empty file (0 bytes)"},
    ]
    assert document["warnings"] == [
        "bucket 48x80: never trained: 1 image < batch 2",
        "bucket 64x64: 1 image dropped each epoch",
    ]


def test_buckets_config_error_exits_2(tmp_path: Path):
    write_project(tmp_path, CONFIG.replace('resolution = "64"', 'resolution = "64px"'))
    result = run_cli("buckets", "c.toml", cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        "error: c.toml: training.resolution: '64px' is not a resolution; use a side like '512', "
        "several sides like '512,768', or a fixed size like '768x512'\n"
    )


def test_buckets_missing_folder_exits_2_naming_the_concept(tmp_path: Path):
    write_project(tmp_path, CONFIG.replace('path = "ds"', 'path = "gone"'))
    result = run_cli("buckets", "c.toml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == f"error: c.toml: concept 'dog' (concepts[0]): folder '{tmp_path / 'gone'}' does not exist\n"

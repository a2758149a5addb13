"""SVG snapshots of the main screens at 80x24 and 120x40 (no GPU, fake estimator, 24 GiB target, no cursor blink)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tui_support import fake_estimate, screen_text, services, wait_for
from tui_support import make_app as real_app
from tui_trainer.config import dump_config, load_preset
from tui_trainer.devkit.datasets import make_dataset
from tui_trainer.tui.screens.editor import EditorScreen
from tui_trainer.tui.widgets.bucket_table import BucketTable

def make_app(tmp_path: Path, config_path: Path | None = None):
    """The app with the fake estimator, so recalibrating the real one does not change these pictures."""
    return real_app(tmp_path, config_path, services=services(estimate=fake_estimate))


SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]


def project(tmp_path: Path) -> Path:
    """A config (sdxl LoRA) with one concept of 7 images in two buckets, beside it."""
    make_dataset(tmp_path / "data" / "dog", ((1024, 1024, 5), (832, 1216, 2)))
    config = load_preset("sdxl-lora")
    config.concepts = [{"name": "dog", "path": "data/dog", "caption_prefix": "sks dog, "}]
    config.samples = [{"prompt": "a photo of sks dog on a beach"}]
    path = tmp_path / "dog-lora.toml"
    path.write_text(dump_config(config))
    return path


def editor_at(section: str):
    async def run_before(pilot) -> None:
        app = pilot.app
        await wait_for(pilot, lambda: isinstance(app.screen, EditorScreen) and app.focused is not None)
        screen = app.screen
        await screen.show_section(section, focus=True)
        table = screen.query_one(BucketTable)
        await wait_for(pilot, lambda: screen.current.SECTION == section and table.report is not None)
        await pilot.pause()

    return run_before


@pytest.mark.parametrize("size", SIZES)
def test_start_screen(snap_compare, tmp_path: Path, size):
    async def run_before(pilot) -> None:
        await wait_for(pilot, lambda: "New run" in screen_text(pilot.app) and pilot.app.focused is not None)

    assert snap_compare(make_app(tmp_path), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("section", ["model", "training", "concepts", "optimizer"])
@pytest.mark.parametrize("size", SIZES)
def test_editor_section(snap_compare, tmp_path: Path, size, section):
    assert snap_compare(make_app(tmp_path, project(tmp_path)), terminal_size=size, run_before=editor_at(section))


@pytest.mark.parametrize("size", SIZES)
def test_wizard_review(snap_compare, tmp_path: Path, size):
    async def run_before(pilot) -> None:
        app = pilot.app
        await wait_for(pilot, lambda: "New run" in screen_text(app) and app.focused is not None)
        await pilot.press("pagedown")
        await wait_for(pilot, lambda: isinstance(app.screen, EditorScreen) and app.focused is not None)
        await app.screen.show_section("review", focus=True)
        await wait_for(pilot, lambda: "Ready to save" in screen_text(app))

    assert snap_compare(make_app(tmp_path), terminal_size=size, run_before=run_before)

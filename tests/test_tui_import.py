"""Opening a OneTrainer / kohya / kohya_ss file in the app: the import report, then the editor on the converted
config; saving writes a new TOML, never over the source."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from tui_support import make_app, screen_text, wait_for

from tui_trainer.config import ConfigError, dump_config, load_config, load_preset
from tui_trainer.tui.screens.editor import EditorScreen
from tui_trainer.tui.screens.import_report import ImportReportDialog

DATA = Path(__file__).parent / "data" / "import"


def editor(app) -> EditorScreen | None:
    return next((screen for screen in app.screen_stack if isinstance(screen, EditorScreen)), None)


async def test_opening_a_onetrainer_config_shows_the_report_then_edits_the_converted_config(tmp_path: Path):
    source = Path(shutil.copy(DATA / "onetrainer" / "my-sd15-lora.json", tmp_path / "my-sd15-lora.json"))
    original = source.read_text()
    app = make_app(tmp_path, source)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ImportReportDialog) and "Imported" in screen_text(app))
        text = screen_text(app)
        assert "Imported my-sd15-lora.json" in text and "OneTrainer config, version 3" in text
        assert "does not exist here" in text and "model_type -> model.family = \"sd15\"" in text
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, EditorScreen) and app.screen.current.built)
        document = app.document
        assert (document.path, document.dirty, document.config.lora.rank) == (None, True, 32)
        assert document.default_save_path() == tmp_path / "my-sd15-lora.toml"
        with pytest.raises(ConfigError, match="is the imported source"):
            document.save(source)
        assert source.read_text() == original and document.dirty
        target = tmp_path / "converted.toml"
        document.save(target)
        assert (document.path, document.dirty, document.imported_from) == (target, False, None)
    assert source.read_text() == original
    assert load_config(target).lora.rank == 32 and load_config(target).parts.text_encoder.train_for == 10


async def test_ctrl_o_imports_a_kohya_config_over_the_current_one(tmp_path: Path):
    config = tmp_path / "c.toml"
    config.write_text(dump_config(load_preset("sd15-lora")))
    source = Path(shutil.copy(DATA / "kohya" / "dataset-only.toml", tmp_path / "dataset.toml"))
    app = make_app(tmp_path, config)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, EditorScreen) and app.focused is not None and app.screen.current.built)
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: "Open" in screen_text(app) and app.focused is not None)
        await pilot.press(*str(source), "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ImportReportDialog) and "Imported" in screen_text(app))
        assert "kohya sd-scripts dataset config" in screen_text(app)
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, EditorScreen))
        document = app.document
        assert (document.path, document.imported_from, document.config.concepts[0].repeats) == (None, source.resolve(), 4.0)
        assert document.default_save_path() == tmp_path / "dataset-tui-trainer.toml"

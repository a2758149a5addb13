"""The wizard, keyboard only: from nothing to a saved TOML equal to an expected file."""

from __future__ import annotations

from pathlib import Path

from tui_support import make_app, screen_text, wait_for
from tui_trainer.config import dump_config, load_config, load_preset
from tui_trainer.tui.screens.editor import EditorScreen

EXPECTED = Path(__file__).parent / "tui_data" / "wizard-sd15-lora.toml"


async def retype(pilot, text: str) -> None:
    await pilot.press("end", "ctrl+u", *text)


async def test_wizard_from_nothing_to_saved_toml(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = make_app(tmp_path)
    target = tmp_path / "wizard-run.toml"
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: "New run" in screen_text(app))
        await pilot.press("tab", "enter", "down", "down", "enter")  # method: lora -> embedding -> finetune
        await pilot.press("enter", "up", "up", "enter")  # ... and back to lora
        await pilot.press("pagedown")
        await wait_for(pilot, lambda: isinstance(app.screen, EditorScreen))
        await wait_for(pilot, lambda: "Model & method" in screen_text(app) and app.focused is not None)
        await pilot.press("tab", "tab")  # method -> family -> base model
        await retype(pilot, "my/base-model")
        await pilot.press("pagedown", "tab", "tab")  # workspace: dir -> cache dir -> run name
        await retype(pilot, "wizard-run")
        await pilot.press("pagedown", "pagedown")  # concepts, samples
        await wait_for(pilot, lambda: "Samples (0)" in screen_text(app))
        await pilot.press("a")
        await wait_for(pilot, lambda: "New sample" in screen_text(app))
        await pilot.press(*"a photo of sks dog", "enter")
        await wait_for(pilot, lambda: "Samples (1)" in screen_text(app))
        await pilot.press("pagedown", "pagedown", "tab")  # backup & save, training: resolution -> batch size
        await retype(pilot, "4")
        await pilot.press("pagedown", "tab")  # optimizer: name -> learning rate
        await retype(pilot, "0.0002")
        await pilot.press("pagedown", "pagedown")  # scheduler, LoRA: type -> rank
        await pilot.press("tab")
        await retype(pilot, "8")
        await pilot.press("pagedown", "pagedown")  # distributed, review
        await wait_for(pilot, lambda: "Ready to save" in screen_text(app))
        assert "concepts: no enabled concept" in screen_text(app)
        await pilot.press("pagedown")  # on the review page: save -> asks for a name
        await wait_for(pilot, lambda: "Save as" in screen_text(app))
        assert app.screen.query_one("#path").value == str(target)  # the run name in the current folder
        await pilot.press("enter")
        await wait_for(pilot, target.exists)
        await wait_for(pilot, lambda: "wizard-run.toml  editor" in screen_text(app))
    expected = load_config(EXPECTED)
    assert load_config(target) == expected
    assert target.read_text() == dump_config(expected)


async def test_the_start_page_offers_every_preset_of_a_family_and_method(tmp_path: Path):
    """Z-Image LoRA has one preset per GPU class: the page lists them plainest first, shows the chosen one's comment,
    and the wizard opens on the one picked."""
    from textual.widgets import Select, Static

    from tui_trainer.tui.screens.start import StartScreen

    app = make_app(tmp_path, None)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, StartScreen))
        screen = app.screen
        screen.query_one("#family", Select).value = "z_image"
        await pilot.pause()
        screen.query_one("#method", Select).value = "lora"
        await pilot.pause()
        presets = screen.query_one("#preset", Select)
        assert [value for _, value in presets._options if value is not Select.BLANK] == [
            "z-image-lora", "z-image-lora-8gb", "z-image-lora-bf16"]
        presets.value = "z-image-lora-8gb"
        await pilot.pause()
        assert "Targets 8 GB GPUs" in str(screen.query_one("#preset-summary", Static).render())
        await pilot.press("pagedown")
        await wait_for(pilot, lambda: isinstance(app.screen, EditorScreen) and app.screen.wizard)
        assert app.screen.document.config == load_preset("z-image-lora-8gb")

"""The editor, keyboard only: live VRAM and buckets, optimizer memory, validation, files, keymap."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tui_support import GIB, FakeEstimate, fake_estimate, make_app, screen_text, services, wait_for
from tui_trainer.config import dump_config, load_config, load_preset
from tui_trainer.devkit.datasets import make_dataset
from tui_trainer.tui.screens.editor import EditorScreen
from tui_trainer.tui.screens.opening import OpeningScreen
from tui_trainer.tui.widgets.bucket_table import BucketTable
from tui_trainer.tui.widgets.field_editor import FieldEditor
from tui_trainer.tui.widgets.vram_panel import VramPanel


def write_preset(path: Path, name: str = "sd15-lora") -> Path:
    path.write_text(dump_config(load_preset(name)))
    return path


async def open_editor(pilot, app) -> EditorScreen:
    await wait_for(pilot, lambda: isinstance(app.screen, EditorScreen) and app.focused is not None
                   and app.screen.current.built)
    return app.screen


async def goto(pilot, screen: EditorScreen, section: str) -> None:
    await screen.show_section(section, focus=True)
    await wait_for(pilot, lambda: screen.current.SECTION == section and pilot.app.focused is not None)


async def focus(pilot, widget) -> None:
    widget.focus()
    await wait_for(pilot, lambda: pilot.app.focused is widget)


async def retype(pilot, text: str) -> None:
    await pilot.press("end", "ctrl+u", *text)


def test_importing_and_starting_the_app_leaves_torch_numpy_and_textual_image_out(tmp_path: Path):
    """torch never; numpy and textual-image (a quarter second of start-up) only once the run screen shows a sample."""
    code = (
        "import asyncio, sys\n"
        "from tui_trainer.tui.app import TrainerApp\n"
        "async def main():\n"
        "    async with TrainerApp(state_dir=sys.argv[1], config_dir=sys.argv[1]).run_test() as pilot:\n"
        "        await pilot.press('pagedown')\n"
        "        await pilot.pause(0.3)\n"
        "asyncio.run(main())\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'diffusers' not in sys.modules, 'diffusers was imported'\n"
        "assert 'numpy' not in sys.modules, 'numpy was imported'\n"
        "assert 'textual_image' not in sys.modules, 'textual_image was imported'\n"
        "print('clean')\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "clean"


async def test_batch_size_changes_the_vram_total(tmp_path: Path):
    config = write_preset(tmp_path / "c.toml")
    app = make_app(tmp_path, config)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_editor(pilot, app)
        panel = screen.query_one(VramPanel)
        await wait_for(pilot, lambda: panel.estimate is not None)
        before = panel.estimate.total_bytes
        await goto(pilot, screen, "training")
        await pilot.press("tab")  # resolution -> batch size
        await retype(pilot, "8")
        await wait_for(pilot, lambda: panel.estimate.total_bytes != before)
        assert panel.estimate.total_bytes > before
        assert f"total {panel.estimate.total_bytes / GIB:.1f}" in screen_text(app)
        assert app.document.config.training.batch_size == 8


async def test_editing_keys_act_in_order_with_characters_typed_in_the_same_burst(tmp_path: Path):
    """Over SSH keys often arrive together: ctrl+u and backspace act before the characters typed after them
    (Textual runs an Input's own bindings only after the key bubbles up to the app)."""
    from textual import events

    app = make_app(tmp_path, write_preset(tmp_path / "c.toml"))
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_editor(pilot, app)
        await goto(pilot, screen, "training")
        batch = screen.query_one("#field-training-batch_size", FieldEditor)
        await pilot.press("tab")  # resolution -> batch size
        await wait_for(pilot, lambda: app.focused is batch.editor)
        for key in ("end", "ctrl+u", "1", "2", "backspace", "6"):
            app.post_message(events.Key(key, key if key.isdigit() else None))
        await wait_for(pilot, lambda: batch.editor.value == "16" and app.document.config.training.batch_size == 16)
        await pilot.pause(0.2)
        assert (batch.editor.value, batch.reason, app.document.config.training.batch_size) == ("16", None, 16)


def test_breakdown_rows_show_parts_under_a_gib_in_mib_and_fit_the_narrow_panel():
    """A LoRA's trainable weights, gradients and optimizer state are tens of MiB, which 0.0 GiB hid; every row fits
    the 26 columns inside the panel on an 80-column screen (a longer one wraps its bar onto the next line)."""
    from tui_trainer.estimate import estimate
    from tui_trainer.tui.widgets.vram_panel import BREAKDOWN, render_estimate

    result = estimate(load_preset("sd15-lora"))
    lines = render_estimate(result).plain.splitlines()
    rows = {line.split()[0]: line.split()[1] for line in lines[1:1 + len(BREAKDOWN)]}
    assert rows["weights"] == f"{result.breakdown['weights'] / GIB:.1f}G"
    assert rows["trainable"] == f"{result.breakdown['trainable'] / 2**20:.0f}M" != "0M"
    assert set(rows) == set(BREAKDOWN)
    heavy = FakeEstimate(40 * GIB, {name: GIB for name in BREAKDOWN} | {"weights": 39 * GIB}, None, None, [], [])
    assert max(len(line) for line in render_estimate(heavy).plain.splitlines()[1:1 + len(BREAKDOWN)]) <= 26


async def test_over_budget_turns_red_and_lists_suggestions(tmp_path: Path):
    config = write_preset(tmp_path / "c.toml")
    app = make_app(tmp_path, config, services=services(estimate=fake_estimate), target_bytes=3 * GIB)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_editor(pilot, app)
        panel = screen.query_one(VramPanel)
        await wait_for(pilot, lambda: panel.has_class("-over"))
        assert "over 1.0" in screen_text(app) and "→ batch 1 + accumulation" in screen_text(app)
        await focus(pilot, screen.query_one("#vram-target"))
        await retype(pilot, "48")
        await wait_for(pilot, lambda: not panel.has_class("-over"))
        assert "fits" in screen_text(app)


async def test_adding_a_concept_folder_shows_bucket_rows(tmp_path: Path):
    make_dataset(tmp_path / "data" / "dog", ((64, 64, 4), (96, 64, 3)))
    config = write_preset(tmp_path / "c.toml")
    app = make_app(tmp_path, config)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_editor(pilot, app)
        table = screen.query_one(BucketTable)
        await wait_for(pilot, lambda: "no concepts yet" in screen_text(app))
        await goto(pilot, screen, "concepts")
        await pilot.press("a")
        await wait_for(pilot, lambda: "New concept" in screen_text(app))
        await retype(pilot, "dog")
        await pilot.press("tab", *"data/dog", "enter")
        await wait_for(pilot, lambda: table.report is not None and table.report.buckets)
        assert [c.path for c in app.document.config.concepts] == ["data/dog"]
        text = screen_text(app)
        assert "Concepts (1)" in text
        for bucket in table.report.buckets:
            assert f"{bucket.width}x{bucket.height}" in text
        assert table.report.total_images == 7


async def test_concept_list_edit_toggle_reorder_remove(tmp_path: Path):
    config_path = tmp_path / "c.toml"
    config = load_preset("sd15-lora")
    config.concepts = [{"name": "a", "path": "a"}, {"name": "b", "path": "b"}]
    config_path.write_text(dump_config(config))
    app = make_app(tmp_path, config_path)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_editor(pilot, app)
        await goto(pilot, screen, "concepts")
        names = lambda: [c.name for c in app.document.config.concepts]  # noqa: E731
        await pilot.press("shift+down")
        await wait_for(pilot, lambda: names() == ["b", "a"])
        await pilot.press("space")
        await wait_for(pilot, lambda: not app.document.config.concepts[1].enabled)
        await pilot.press("enter")
        await wait_for(pilot, lambda: "Edit concept 2" in screen_text(app))
        await retype(pilot, "renamed")
        await pilot.press("enter")
        await wait_for(pilot, lambda: names() == ["b", "renamed"])
        await pilot.press("shift+up", "x")
        await wait_for(pilot, lambda: names() == ["b"])
        assert app.document.dirty


async def test_the_record_dialog_shows_the_focused_fields_help_and_its_own_keys(tmp_path: Path):
    """Each concept field's docstring from the schema, under the dialog's fields, as focus moves; the footer lists
    the dialog's keys, not those of the editor under it."""
    from tui_trainer.config.schema import ConceptConfig

    app = make_app(tmp_path, write_preset(tmp_path / "c.toml"))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_editor(pilot, app)
        await goto(pilot, screen, "concepts")
        await pilot.press("a")
        await wait_for(pilot, lambda: "New concept" in screen_text(app))
        footer = lambda: screen_text(app).splitlines()[-1]  # noqa: E731
        await wait_for(pilot, lambda: "esc Cancel" in footer() and "^s OK" in footer())
        assert "Add" not in footer()
        help_bar = app.screen.query_one("#dialog-help")
        for name in ("name", "path"):
            description = ConceptConfig.model_fields[name].description
            await wait_for(pilot, lambda: str(help_bar.render()).startswith(f"{name.capitalize()} ({name}): "))
            assert description and description.split()[0] in str(help_bar.render())
            await pilot.press("tab")


async def test_optimizer_switch_restores_each_optimizers_settings(tmp_path: Path):
    config = write_preset(tmp_path / "c.toml")
    app = make_app(tmp_path, config)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_editor(pilot, app)
        await goto(pilot, screen, "optimizer")

        async def choose(name: str) -> None:
            select = screen.query_one("#field-optimizer-name .field-editor")
            await focus(pilot, select)
            await pilot.press("enter")
            await wait_for(pilot, lambda: select.expanded)
            options = [value for value, _ in [("adamw", 0), ("adamw8bit", 0), ("adafactor", 0), ("prodigy", 0),
                                                   ("lion", 0), ("lion8bit", 0), ("sgd", 0), ("schedule_free_adamw", 0)]]
            current = options.index(app.document.config.optimizer.name.value)
            step = "down" if options.index(name) > current else "up"
            await pilot.press(*[step] * abs(options.index(name) - current), "enter")
            await wait_for(pilot, lambda: app.document.config.optimizer.name.value == name
                           and f"{name} settings" in screen_text(app))

        await choose("adamw")
        beta1 = screen.query_one("#field-optimizer-settings-adamw-beta1 .field-editor")
        await focus(pilot, beta1)
        await retype(pilot, "0.8")
        await pilot.press("tab")
        await retype(pilot, "0.95")
        await wait_for(pilot, lambda: app.document.config.optimizer.settings.adamw.beta2 == 0.95)
        await choose("prodigy")
        assert "D coef" in screen_text(app)
        await choose("adamw")
        assert screen.query_one("#field-optimizer-settings-adamw-beta1 .field-editor").value == "0.8"
        assert screen.query_one("#field-optimizer-settings-adamw-beta2 .field-editor").value == "0.95"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: not app.document.dirty)
    saved = load_config(config)
    assert saved.optimizer.name.value == "adamw"
    assert (saved.optimizer.settings.adamw.beta1, saved.optimizer.settings.adamw.beta2) == (0.8, 0.95)


async def test_invalid_learning_rate_shows_the_reason_and_blocks_saving(tmp_path: Path):
    config = write_preset(tmp_path / "c.toml")
    original = config.read_text()
    app = make_app(tmp_path, config)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_editor(pilot, app)
        await goto(pilot, screen, "optimizer")
        await pilot.press("tab")  # name -> learning rate
        await retype(pilot, "2")
        reason = "2.0 is out of range; allowed: > 0 and <= 1"
        editor = screen.query_one("#field-optimizer-learning_rate", FieldEditor)
        await wait_for(pilot, lambda: "2.0 is out of" in screen_text(app))
        assert editor.has_class("-invalid") and editor.reason == reason
        assert app.document.invalid == {"optimizer.learning_rate": reason}
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: screen.current.SECTION == "review")
        assert "Cannot save yet." in screen_text(app)
        assert f"optimizer.learning_rate: {reason}" in screen.current.lines[0]
        assert config.read_text() == original
        await goto(pilot, screen, "optimizer")
        await pilot.press("tab")
        await retype(pilot, "abc")
        await wait_for(pilot, lambda: "'abc' is not a" in screen_text(app))
        await retype(pilot, "0.0003")
        await wait_for(pilot, lambda: not app.document.invalid)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: not app.document.dirty)
    assert load_config(config).optimizer.learning_rate == 0.0003


async def test_opening_a_broken_file_keeps_the_current_state(tmp_path: Path):
    config = write_preset(tmp_path / "c.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text('[model]\nbase_model = "x"\n[training]\nbatch_size = 0\nbatch_sise = 2\n')
    app = make_app(tmp_path, config)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_editor(pilot, app)
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: "Open" in screen_text(app) and app.focused is not None)
        await pilot.press(*str(broken), "enter")
        await wait_for(pilot, lambda: "Your current settings are kept." in screen_text(app))
        text = screen_text(app)
        assert "training.batch_size: 0 is out of range" in text
        assert "did you mean 'training.batch_size'?" in text
        assert "Your current settings are kept." in text
        await pilot.press("escape")
        assert app.document.path == config.resolve()
        assert app.document.config == load_config(config)


async def test_file_changed_on_disk_is_reloaded(tmp_path: Path):
    config = write_preset(tmp_path / "c.toml")
    app = make_app(tmp_path, config)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_editor(pilot, app)
        changed = load_preset("sd15-lora")
        changed.training.epochs = 77
        config.write_text(dump_config(changed) + "\n# edited elsewhere\n")
        await wait_for(pilot, lambda: app.document.config.training.epochs == 77)
        config.write_text("this is [not toml\n")
        await wait_for(pilot, lambda: "has errors" in screen_text(app))
        assert app.document.config.training.epochs == 77


async def test_quit_with_unsaved_changes_asks_first(tmp_path: Path):
    config = write_preset(tmp_path / "c.toml")
    app = make_app(tmp_path, config)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_editor(pilot, app)
        await goto(pilot, screen, "training")
        await pilot.press("tab", "ctrl+u", "3")
        await wait_for(pilot, lambda: app.document.dirty)
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: "unsaved changes" in screen_text(app))
        await pilot.press("tab", "tab", "enter")  # Save -> Quit without saving -> Cancel
        await wait_for(pilot, lambda: isinstance(app.screen, EditorScreen))
        assert app.is_running
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: "unsaved changes" in screen_text(app))
        await pilot.press("enter")  # Save
        await wait_for(pilot, lambda: not app.is_running)
    assert load_config(config).training.batch_size == 3


async def test_keymap_file_remaps_a_binding(tmp_path: Path):
    config = write_preset(tmp_path / "c.toml")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "keymap.toml").write_text('save = "f5"\nsaev = "f6"\n')
    app = make_app(tmp_path, config)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_editor(pilot, app)
        messages = lambda: [notification.message for notification in app._notifications]  # noqa: E731
        await wait_for(pilot, lambda: any("unknown binding id 'saev'; did you mean 'save'?" in m for m in messages()))
        await goto(pilot, screen, "training")
        await pilot.press("tab", "ctrl+u", "5")
        await wait_for(pilot, lambda: app.document.dirty)
        await pilot.press("f5")
        await wait_for(pilot, lambda: not app.document.dirty)
        assert "f5 Save" in screen_text(app)
    assert load_config(config).training.batch_size == 5


async def test_recent_files_are_offered_on_start(tmp_path: Path):
    config = write_preset(tmp_path / "c.toml")
    async with make_app(tmp_path, config).run_test() as pilot:
        await open_editor(pilot, pilot.app)
    app = make_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: str(config.resolve()) in screen_text(app))
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, EditorScreen))
        assert app.document.path == config.resolve()


async def test_command_palette_lists_actions_and_sections(tmp_path: Path):
    config = write_preset(tmp_path / "c.toml")
    app = make_app(tmp_path, config)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_editor(pilot, app)
        await pilot.press("ctrl+p")
        await pilot.press(*"go to dist")
        await wait_for(pilot, lambda: "Go to Distributed" in screen_text(app))
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.screen.current.SECTION == "distributed")
        await pilot.press("ctrl+p", *"save as")
        await wait_for(pilot, lambda: "keymap id: save_as" in screen_text(app))


def test_every_config_field_is_on_a_section():
    from tui_trainer.config.schema import OPTIMIZER_SETTINGS, TrainConfig
    from tui_trainer.tui.screens.editor import SECTIONS
    from tui_trainer.tui.screens.method_specific import METHOD_GROUPS
    from tui_trainer.models.families import FAMILIES
    from tui_trainer.tui.widgets.field_group import editable_fields

    shown = set()
    groups = [group for section in SECTIONS for group in section.GROUPS]
    groups += [group for method_groups in METHOD_GROUPS.values() for group in method_groups]
    for group in groups:
        model = TrainConfig if not group.prefix else TrainConfig.model_fields[group.prefix].annotation
        shown |= {f"{group.prefix}.{name}".lstrip(".") for name in editable_fields(model, group.names)}
    shown |= {f"scheduler.{name}" for name in TrainConfig.model_fields["scheduler"].annotation.model_fields}
    shown |= {f"optimizer.{name}" for name in ("name", "learning_rate")}
    from tui_trainer.config.schema import PartConfig

    tables = {part.config_section for spec in FAMILIES.values() for part in spec.configured_parts}
    shown |= {f"parts.{table}.{name}" for table in tables for name in PartConfig.model_fields}
    expected = set()
    for section, field in TrainConfig.model_fields.items():
        model = field.annotation
        if section in ("concepts", "samples", "version"):
            continue
        if section == "parts":
            expected |= {f"parts.{table}.{name}" for table in model.model_fields for name in PartConfig.model_fields}
            continue
        if isinstance(model, type) and hasattr(model, "model_fields"):
            expected |= {f"{section}.{name}" for name in editable_fields(model)}
        else:
            expected.add(section)
    assert expected - shown == set()
    assert all(editable_fields(settings) for settings in OPTIMIZER_SETTINGS.values())


async def test_family_only_fields_show_for_their_family_alone(tmp_path: Path):
    for preset, shown in (("sd15-lora", False), ("cascade-lora", True)):
        app = make_app(tmp_path, write_preset(tmp_path / f"{preset}.toml", preset))
        async with app.run_test(size=(120, 60)) as pilot:
            screen = await open_editor(pilot, app)
            await goto(pilot, screen, "model")
            assert ("Effnet encoder" in screen_text(app)) is shown, preset


def test_sidebar_follows_the_outline_the_first_frame_shows():
    from tui_trainer.tui.outline import SECTION_TITLES
    from tui_trainer.tui.screens.editor import SECTIONS

    assert [(pane.SECTION, pane.TITLE) for pane in SECTIONS] == list(SECTION_TITLES.items())


def test_first_frame_lists_the_sections_before_the_config_schema_is_imported(tmp_path: Path):
    """The opening screen is painted by a process that has not imported pydantic, the editor, the keymap (tomllib) or
    the recent-files list (json) yet; then the editor of the file replaces it."""
    config = write_preset(tmp_path / "c.toml")
    code = (
        "import asyncio, sys\n"
        "from tui_trainer.tui.app import TrainerApp\n"
        "from tui_trainer.tui.screens.opening import OpeningScreen\n"
        "seen = []\n"
        "open_first_screen = TrainerApp._open_first_screen\n"
        "def spy(self):\n"
        "    text = '\\n'.join(strip.text for strip in self.screen._compositor.render_strips())\n"
        "    seen.append((isinstance(self.screen, OpeningScreen), 'Model & method' in text, 'Opening' in text,\n"
        "                 'pydantic' in sys.modules, 'tui_trainer.tui.screens.editor' in sys.modules,\n"
        "                 'json' in sys.modules, 'tomllib' in sys.modules))\n"
        "    open_first_screen(self)\n"
        "TrainerApp._open_first_screen = spy\n"
        "async def main():\n"
        "    app = TrainerApp(sys.argv[1], state_dir=sys.argv[2], config_dir=sys.argv[2])\n"
        "    async with app.run_test(size=(120, 40)) as pilot:\n"
        "        while type(app.screen).__name__ != 'EditorScreen' or app.focused is None:\n"
        "            await pilot.pause(0.05)\n"
        "asyncio.run(main())\n"
        "print(seen)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(config), str(tmp_path)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[(True, True, True, False, False, False, False)]"


def type_ahead(app, *typed) -> None:
    """Post `typed` (key and paste events) while the opening screen is up, just before the app opens the editor or
    the start page."""
    open_first_screen = app._open_first_screen

    def post_then_open() -> None:
        assert isinstance(app.screen, OpeningScreen)
        for event in typed:
            app.post_message(event)
        open_first_screen()

    app._open_first_screen = post_then_open


async def test_keys_pressed_before_the_editor_is_in_are_replayed_to_it_in_order(tmp_path: Path):
    """While the opening screen is up (the editor still loading) keys and pasted text have nothing to go to: they
    are kept and reach the editor once its first field has focus."""
    from textual import events

    app = make_app(tmp_path, write_preset(tmp_path / "c.toml"))
    keys = ("pagedown", "pagedown", "pagedown", "pagedown", "pagedown", "tab", "end", "ctrl+u")
    type_ahead(app, *(events.Key(key, None) for key in keys), events.Paste("8"))
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.document is not None and app.document.config.training.batch_size == 8)
        screen = app.screen
        assert screen.section == "training" and app.focused is screen.query_one("#field-training-batch_size").editor
        assert app.typed_ahead is None


@pytest.mark.parametrize("opened", ["nothing", "a broken file", "a missing file"])
async def test_keys_typed_ahead_reach_the_start_page_too(tmp_path: Path, opened: str):
    """Without an editor to wait for (the start page, under the file's problems or with a note), keys kept during
    start-up are replayed as well: Escape closes the problems, PgDn starts the wizard."""
    from textual import events

    from tui_trainer.tui.screens.problems import ProblemsDialog
    from tui_trainer.tui.screens.start import StartScreen

    path = {"nothing": None, "a broken file": tmp_path / "broken.toml", "a missing file": tmp_path / "new.toml"}[opened]
    if opened == "a broken file":
        path.write_text("[training]\nbatch_size = 0\n")
    app = make_app(tmp_path, path)
    type_ahead(app, events.Key("escape" if opened == "a broken file" else "pagedown", None))
    async with app.run_test(size=(120, 40)) as pilot:
        if opened == "a broken file":
            await wait_for(pilot, lambda: isinstance(app.screen, StartScreen))
            assert not any(isinstance(screen, ProblemsDialog) for screen in app.screen_stack)
        else:
            # Until the first section is built and focused: leaving earlier shuts the app down mid-mount.
            await wait_for(pilot, lambda: isinstance(app.screen, EditorScreen) and app.screen.wizard
                           and app.focused is not None and app.focused in app.screen.current.walk_children())
        assert app.typed_ahead is None


def test_the_app_draws_up_to_120_frames_a_second_unless_the_user_chose_a_cap():
    """`run_app` raises Textual's frame cap before Textual is imported (an edit's two frames wait less), and keeps a
    TEXTUAL_FPS the user set."""
    code = (
        "from tui_trainer import cli\n"
        "from tui_trainer.tui import graphics\n"
        "graphics.start_probe = lambda: (lambda: None)\n"
        "class App:\n"
        "    def run(self):\n"
        "        from textual.constants import MAX_FPS\n"
        "        print(MAX_FPS)\n"
        "cli.run_app(App)\n"
    )
    environment = {key: value for key, value in os.environ.items() if key != "TEXTUAL_FPS"}
    default = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=60)
    chosen = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={**environment, "TEXTUAL_FPS": "30"})
    assert (default.stdout.strip(), chosen.stdout.strip()) == ("120", "30"), default.stderr + chosen.stderr


def test_run_app_pauses_the_cycle_collector_for_start_up_and_always_resumes_it(monkeypatch):
    """Paused while Textual is imported and the app is built and run (the app resumes it once drawn), and on once
    `run_app` returns, even when the app fails."""
    from tui_trainer import cli
    from tui_trainer.tui import graphics

    monkeypatch.setattr(graphics, "start_probe", lambda: (lambda: None))
    monkeypatch.setenv("TEXTUAL_FPS", "60")
    seen = []

    class FailingApp:
        def __init__(self) -> None:
            seen.append(gc.isenabled())

        def run(self) -> None:
            seen.append(gc.isenabled())
            raise RuntimeError("app failed")

    try:
        with pytest.raises(RuntimeError, match="app failed"):
            cli.run_app(FailingApp)
        seen.append(gc.isenabled())
    finally:
        gc.enable()
    assert seen == [False, False, True]


@pytest.mark.parametrize("first_screen", ["editor", "runs browser"])
async def test_the_app_resumes_the_cycle_collector_once_its_first_screen_is_up(tmp_path: Path, first_screen: str):
    from tui_trainer.tui.screens.runs_browser import RunsBrowserScreen

    if first_screen == "editor":
        app = make_app(tmp_path, write_preset(tmp_path / "c.toml"))
        shown = EditorScreen
    else:
        app = make_app(tmp_path, initial_screen=lambda: RunsBrowserScreen(tmp_path / "workspace"))
        shown = RunsBrowserScreen
    gc.disable()
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, shown))
            await wait_for(pilot, gc.isenabled)
    finally:
        gc.enable()

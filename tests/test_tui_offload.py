"""The block-offload fields ([flow.offload]) in the Model & method pane: flow families only, reachable by keyboard."""

from __future__ import annotations

from pathlib import Path

from test_tui_editor import goto, open_editor, write_preset
from tui_trainer.config import dump_config
from tui_support import make_app, screen_text, wait_for

OFFLOAD_KEYS = ("flow-offload-enabled", "flow-offload-blocks_per_group", "flow-offload-use_stream")


async def test_offload_fields_are_reached_with_tab_and_switched_with_space(tmp_path: Path):
    app = make_app(tmp_path, write_preset(tmp_path / "flux.toml", "flux1-dev-lora"))
    async with app.run_test(size=(120, 60)) as pilot:
        screen = await open_editor(pilot, app)
        await goto(pilot, screen, "model")
        assert "Transformer offload (flow families)" in screen_text(app)
        field = screen.query_one("#field-flow-offload-enabled")
        for _ in range(80):
            if app.focused is not None and field in app.focused.ancestors:
                break
            await pilot.press("tab")
        assert field in app.focused.ancestors
        await wait_for(pilot, lambda: "Offload when VRAM is short" in screen_text(app))
        await pilot.press("space")
        await wait_for(pilot, lambda: app.document.config.flow.offload.enabled)
        await pilot.press("tab", "end", "ctrl+u", "2")
        await wait_for(pilot, lambda: app.document.config.flow.offload.blocks_per_group == 2)
        assert "[flow.offload]\nenabled = true\nblocks_per_group = 2\n" in dump_config(app.document.config)


async def test_offload_fields_are_left_out_for_other_families(tmp_path: Path):
    app = make_app(tmp_path, write_preset(tmp_path / "sdxl.toml", "sdxl-lora"))
    async with app.run_test(size=(120, 60)) as pilot:
        screen = await open_editor(pilot, app)
        await goto(pilot, screen, "model")
        assert "Transformer offload" not in screen_text(app)
        assert not any(screen.query(f"#field-{key}") for key in OFFLOAD_KEYS)


def test_the_vram_panel_gives_the_copy_cost_per_step():
    from tui_trainer.config import load_preset
    from tui_trainer.estimate import estimate
    from tui_trainer.tui.widgets.vram_panel import render_estimate

    config = load_preset("flux1-dev-lora")
    assert "block offload" not in render_estimate(estimate(config)).plain
    config.parts.denoiser.dtype = "bfloat16"
    config.flow.offload.enabled = True
    assert "\nblock offload: 44.1 GiB copied a step, ~2.4 s" in render_estimate(estimate(config)).plain

"""The user guide's generated parts match the program, and the README's quick start names real things."""

from __future__ import annotations

import argparse
import re
import shlex
import tomllib
from pathlib import Path

from tui_trainer.cli import build_parser
from tui_trainer.guide_assets import demo_bucket_block, guide_bucket_block

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "guide.md"
README = ROOT / "README.md"
REGENERATE = "python -m tui_trainer.guide_assets --no-screenshots"


def test_guide_bucket_table_is_what_the_program_prints_now():
    assert guide_bucket_block(GUIDE.read_text()) == demo_bucket_block(), f"stale: run `{REGENERATE}`"


def test_every_image_the_guide_shows_exists():
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", GUIDE.read_text())
    assert len(images) >= 5
    missing = [image for image in images if not (GUIDE.parent / image).is_file()]
    assert not missing, f"run `python -m tui_trainer.guide_assets`: {missing}"


def test_guide_ends_with_the_family_sections():
    sections = re.findall(r"^## (.+)$", GUIDE.read_text(), flags=re.MULTILINE)
    assert sections[-4:] == ["FLUX.1 and Chroma", "Z-Image", "Qwen-Image", "Stable Cascade and PixArt-alpha"]


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """A parser's subcommand parsers by name (empty when it has none)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_tui_trainer_command_and_option_in_the_guide_exists():
    text = GUIDE.read_text()
    uses = re.findall(r"`(tui-trainer [^`]*)`", text) + re.findall(r"^    (tui-trainer .*)$", text, flags=re.MULTILINE)
    assert len(uses) > 10
    for use in uses:
        parser, words = build_parser(), use.split()[1:]
        if words[0].isupper() or words[0].endswith(".toml"):
            continue
        while words and words[0] in subcommands(parser):
            parser, words = subcommands(parser)[words[0]], words[1:]
        assert parser is not None and not subcommands(parser), use
        options = {option for action in parser._actions for option in action.option_strings}
        assert {word.strip("[]") for word in words if word.strip("[]").startswith("-")} <= options, use


def config_keys() -> set[str]:
    """Every dotted config key in docs/config.md (generated from the schema), like `training.batch_size`."""
    keys, section = set(), ""
    for line in (ROOT / "docs" / "config.md").read_text().splitlines():
        if line.startswith("## "):
            section = line[3:].strip("`[] ").replace("Top level", "")
        elif line.startswith("| `"):
            keys.add(f"{section}.{line.split('`')[1]}".lstrip("."))
    return keys


def test_every_dotted_config_key_in_the_guide_exists():
    sections = {key.split(".")[0] for key in config_keys()}
    used = {key for key in re.findall(r"`([a-z_0-9]+\.[a-z_0-9]+)[ =`]", GUIDE.read_text()) if key.split(".")[0] in sections}
    assert len(used) > 20
    assert used <= config_keys(), used - config_keys()


def quick_start_commands() -> list[str]:
    """The indented code lines of the README's Quick start section."""
    text = README.read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [line.strip() for line in section.splitlines() if line.startswith("    ") and line.strip()]


def test_readme_quick_start_is_two_commands_naming_real_extras_and_subcommands():
    commands = quick_start_commands()
    assert len(commands) == 2, commands
    assert "tui-trainer demo" in commands[0], "issue 10: the first quick-start command installs and runs the demo"
    assert "python -m pytest" in commands[1]
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    names = set(subcommands(build_parser()))
    for command in commands:
        for step in command.split("&&"):
            words = shlex.split(step)
            if words[:3] == ["pip", "install", "-e"]:
                wanted = re.fullmatch(r"\.\[([a-z,]+)\]", words[3]).group(1).split(",")
                assert set(wanted) <= extras, (step, extras)
            if words[0] == "tui-trainer":
                assert words[1] in names, step

"""Configs the previous release wrote (version 1: [unet] / [text_encoder] tables, model.unet_dtype) read as the same
run: every release-1 preset equals today's preset, `config validate` says what it migrated, an old config estimates
like its new form, and the old SD1.5 and SDXL LoRA presets train on the tiny models."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import tomli_w

from tui_trainer.cli import main
from tui_trainer.config import config_to_dict, load_config, load_preset, preset_names

RELEASE_1 = Path(__file__).parent / "data" / "release-1"
"""The previous release's presets, and a config its TUI saved, as it wrote them."""


def _run_settings(path_or_config) -> dict:
    """A config as a dict, with [parts] narrowed to the parts its family has (the others decide nothing)."""
    from tui_trainer.models.families import spec_for_model

    config = load_config(path_or_config) if isinstance(path_or_config, Path) else path_or_config
    document = config_to_dict(config)
    tables = {part.config_section for part in spec_for_model(config.model.family, config.model.base_model).configured_parts}
    document["parts"] = {table: value for table, value in document["parts"].items() if table in tables}
    return document


def test_every_release_1_preset_is_still_shipped_and_reads_as_the_same_run():
    old = sorted(path.stem for path in RELEASE_1.glob("*.toml") if path.stem != "tui-saved-sd15-lora")
    assert old and set(old) <= set(preset_names())
    for name in old:
        assert _run_settings(RELEASE_1 / f"{name}.toml") == _run_settings(load_preset(name)), name


def test_release_1_part_settings_land_in_parts_tables():
    config = load_config(RELEASE_1 / "sd15-finetune.toml")
    assert config.version == 2
    assert config.parts.denoiser.dtype.value == "float32" and config.parts.denoiser.train is True
    assert config.parts.text_encoder.dtype.value == "float16"
    sdxl = load_config(RELEASE_1 / "sdxl-lora.toml")
    assert sdxl.parts.text_encoder_2.dtype.value == "bfloat16" and sdxl.parts.text_encoder_2.train is False


@pytest.mark.parametrize("name", ["sd15-lora", "sdxl-lora", "tui-saved-sd15-lora"])
def test_config_validate_says_what_it_migrated(name: str, capsys, tmp_path: Path):
    path = tmp_path / f"{name}.toml"
    path.write_text((RELEASE_1 / f"{name}.toml").read_text())
    before = path.read_bytes()
    assert main(["config", "validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "version 1 config, read as version 2" in out
    assert "migrated [unet] -> [parts.denoiser]" in out
    assert "migrated model.unet_dtype -> parts.denoiser.dtype" in out
    assert out.rstrip().endswith("ok")
    assert path.read_bytes() == before


def test_a_current_config_validates_without_migration_notes(capsys, tmp_path: Path):
    path = tmp_path / "new.toml"
    assert main(["config", "new", "--preset", "sdxl-lora", "-o", str(path)]) == 0
    capsys.readouterr()
    assert main(["config", "validate", str(path)]) == 0
    assert "migrated" not in capsys.readouterr().out


def test_an_old_config_estimates_like_its_new_form(capsys, tmp_path: Path):
    def estimate(path: Path) -> dict:
        capsys.readouterr()
        assert main(["estimate", str(path), "--json", "--gpu-memory", "24GiB"]) == 0
        return json.loads(capsys.readouterr().out)

    new = tmp_path / "new.toml"
    new.write_text(tomli_w.dumps(config_to_dict(load_config(RELEASE_1 / "sdxl-lora.toml"))))
    old = estimate(RELEASE_1 / "sdxl-lora.toml")
    assert old == estimate(new)
    assert old["parts"]["unet"]["params"] == 2_567_463_684 and old["total_bytes"] > 0


@pytest.mark.slow
@pytest.mark.parametrize(("name", "kind"), [("sd15-lora", "sd15"), ("sdxl-lora", "sdxl")])
def test_an_old_lora_preset_trains(name: str, kind: str, tiny_model_dir, tmp_path: Path):
    """The release-1 file, edited only where any user edits a preset (model, data, size), trains two steps."""
    from tui_trainer.devkit.datasets import make_dataset
    from tui_trainer.runs.events import SaveEvent, StepEvent, read_events

    document = tomllib.loads((RELEASE_1 / f"{name}.toml").read_text())
    document["model"] |= {"base_model": str(tiny_model_dir(kind)), "unet_dtype": "float32", "text_encoder_dtype": "float32",
                          "train_dtype": "float32"}
    document["workspace"] |= {"dir": str(tmp_path / "ws"), "run_name": "old"}
    document["training"] |= {"resolution": "64", "batch_size": 2, "max_steps": 2, "dataloader_workers": 0,
                             "tensorboard": False, "gradient_checkpointing": False, "bucket_step": 8}
    document["optimizer"] |= {"name": "adamw"}
    document["sampling"] = {"every": 0}
    document["concepts"] = [{"name": "shapes", "path": str(make_dataset(tmp_path / "data", ((64, 64, 4),)))}]
    assert "unet" in document and document["version"] == 1
    path = tmp_path / "old.toml"
    path.write_text(tomli_w.dumps(document))
    assert main(["train", str(path)]) == 0
    (run,) = (tmp_path / "ws" / "runs").iterdir()
    events = read_events(run / "events.jsonl")
    assert [event.step for event in events if isinstance(event, StepEvent)] == [1, 2]
    (saved,) = [event for event in events if isinstance(event, SaveEvent)]
    assert Path(saved.path).is_file()

"""Config schema, TOML io, presets and error messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tui_trainer.config import (
    ConfigError,
    TrainConfig,
    check_paths,
    dump_config,
    load_config,
    load_preset,
    parse_config,
    preset_names,
    save_config,
)
from tui_trainer.config import io as config_io
from tui_trainer.config.enums import Method, OptimizerName
from tui_trainer.config.schema import AdamWSettings, parse_resolution

EXPECTED_PRESETS = {
    "sd15-lora",
    "flux1-dev-lora",
    "flux1-dev-lora-fp8",
    "flux1-schnell-lora",
    "chroma-lora",
    "qwen-image-lora",
    "qwen-image-lora-16gb",
    "flux1-dev-finetune",
    "sd15-embedding",
    "sd15-finetune",
    "sd15-inpaint",
    "sd21-lora",
    "sdxl-lora",
    "sdxl-embedding",
    "sdxl-finetune",
}

BASE = '[model]\nbase_model = "x"\n'


def test_presets_are_all_shipped():
    assert EXPECTED_PRESETS <= set(preset_names())


@pytest.mark.parametrize("name", sorted(EXPECTED_PRESETS))
def test_preset_loads_saves_and_reloads_equal(name: str, tmp_path: Path):
    config = load_preset(name)
    path = tmp_path / f"{name}.toml"
    save_config(config, path)
    assert load_config(path) == config
    save_config(load_config(path), path)
    assert load_config(path) == config


def test_preset_community_defaults():
    sdxl = load_preset("sdxl-lora")
    assert sdxl.training.resolution == "1024"
    assert sdxl.model.train_dtype.value == "bfloat16"
    assert sdxl.optimizer.name in (OptimizerName.ADAMW8BIT, OptimizerName.ADAFACTOR)
    assert sdxl.training.gradient_checkpointing and sdxl.training.cache_latents
    sd21 = load_preset("sd21-lora")
    assert (sd21.model.family.value, sd21.training.resolution, sd21.model.prediction_type.value) == (
        "sd2",
        "768",
        "v_prediction",
    )


BAD_CONFIGS = [
    ("syntax", "version = 1\n[model\n", "c.toml: TOML syntax error: Expected ']' at the end of a table declaration (at line 2, column 7)"),
    ("unknown key", BASE + "[training]\nbatchsize = 2\n", "c.toml: training.batchsize: unknown key; did you mean 'training.batch_size'?"),
    ("unknown top key", 'methd = "lora"\n' + BASE, "c.toml: methd: unknown key; did you mean 'method'?"),
    ("wrong type", BASE + '[training]\nbatch_size = "two"\n', "c.toml: training.batch_size: 'two' has the wrong type; expected an integer"),
    ("lr range", BASE + "[optimizer]\nlearning_rate = 5.0\n", "c.toml: optimizer.learning_rate: 5.0 is out of range; allowed: > 0 and <= 1"),
    ("part lr range", BASE + "[parts.denoiser]\nlearning_rate = -1e-4\n",
     "c.toml: parts.denoiser.learning_rate: -0.0001 is out of range; allowed: > 0 and <= 1"),
    ("old part lr range", BASE + "[unet]\nlearning_rate = -1e-4\n",
     "c.toml: parts.denoiser.learning_rate: -0.0001 is out of range; allowed: > 0 and <= 1 (written as [unet] in this version 1 file)"),
    ("batch 0", BASE + "[training]\nbatch_size = 0\n", "c.toml: training.batch_size: 0 is out of range; allowed: >= 1 and <= 256"),
    ("bad enum", BASE + '[training]\nbucket_remainder = "dropp"\n', "c.toml: training.bucket_remainder: 'dropp' is not allowed; allowed: drop, repeat, partial"),
    ("bad family", BASE + 'family = "sd3"\n', "c.toml: model.family: 'sd3' is not allowed; allowed: sd15, sd2, sdxl, pixart_alpha, stable_cascade, flux1_dev, flux1_schnell, chroma, z_image, qwen_image"),
    (
        "resolution malformed",
        BASE + '[training]\nresolution = "512x"\n',
        "c.toml: training.resolution: '512x' is not a resolution; use a side like '512', several sides like '512,768', or a fixed size like '768x512'",
    ),
    (
        "resolution not multiple of 8",
        BASE + '[training]\nresolution = "500"\n',
        "c.toml: training.resolution: '500': side 500 must be a multiple of 8 between 64 and 4096",
    ),
    ("missing base model", '[model]\nfamily = "sd15"\n', "c.toml: model.base_model: is required but missing"),
    (
        "format vs method",
        'method = "embedding"\n' + BASE + '[workspace]\noutput_format = "kohya"\n',
        "c.toml: workspace.output_format: 'kohya' does not fit method 'embedding'; allowed: a1111",
    ),
    (
        "warmup fraction",
        BASE + "[scheduler]\nwarmup = 1.5\n",
        "c.toml: scheduler.warmup: 1.5 is not a fraction; use an integer step count or a number between 0 and 1",
    ),
    ("repeats 0", BASE + '[[concepts]]\nname = "a"\npath = "p"\nrepeats = 0\n', "c.toml: concepts[0].repeats: 0 is out of range; allowed: > 0 and <= 1000"),
    (
        "unknown sampler",
        BASE + '[[samples]]\nprompt = "a"\nsampler = "foo"\n',
        "c.toml: samples[0].sampler: unknown sampler 'foo'; allowed: ddim, ddpm, pndm, euler, euler_a, heun, lms, dpm2, dpm2_a, dpmpp_2m, dpmpp_sde, unipc, deis",
    ),
    (
        "optimizer settings key",
        BASE + "[optimizer.settings.adamw]\nbeta = 0.9\n",
        "c.toml: optimizer.settings.adamw.beta: unknown key; did you mean 'optimizer.settings.adamw.beta2'?",
    ),
    ("newer version", "version = 7\n" + BASE, "c.toml: version: 7 is newer than this tui-trainer reads (2); upgrade tui-trainer"),
    (
        "run name",
        BASE + '[workspace]\nrun_name = "my run"\n',
        "c.toml: workspace.run_name: 'my run' is not allowed; allowed characters: letters, digits, '.', '_', '-' (no spaces)",
    ),
]


@pytest.mark.parametrize(("case", "text", "expected"), BAD_CONFIGS, ids=[case[0] for case in BAD_CONFIGS])
def test_bad_config_gives_one_clear_message(case: str, text: str, expected: str):
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "c.toml")
    assert str(caught.value) == expected
    assert len(caught.value.problems) == 1


def test_missing_concept_path_names_the_concept(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text(BASE + '[[concepts]]\nname = "dogs"\npath = "no-such-folder"\n')
    problems = check_paths(load_config(path), path)
    assert [str(p) for p in problems] == [
        f"{path}: concepts[0].path: folder '{tmp_path / 'no-such-folder'}' of concept 'dogs' does not exist"
    ]


def test_absent_key_is_default_and_unset_is_absent():
    config = parse_config(BASE)
    assert config.training.batch_size == 1
    assert config.model.vae is None
    assert "\nvae =" not in dump_config(config)


def test_optimizer_settings_are_remembered_per_optimizer():
    config = parse_config(BASE + "[optimizer.settings.adamw]\nweight_decay = 0.05\n")
    config.optimizer.name = OptimizerName.PRODIGY
    config = parse_config(dump_config(config))
    assert config.optimizer.active_settings().d_coef == 1.0
    config.optimizer.name = OptimizerName.ADAMW
    settings = config.optimizer.active_settings()
    assert isinstance(settings, AdamWSettings) and settings.weight_decay == 0.05


def test_warmup_int_is_steps_float_is_fraction():
    assert parse_config(BASE + "[scheduler]\nwarmup = 100\n").scheduler.warmup == 100
    assert isinstance(parse_config(dump_config(parse_config(BASE + "[scheduler]\nwarmup = 100\n"))).scheduler.warmup, int)
    assert parse_config(BASE + "[scheduler]\nwarmup = 0.1\n").scheduler.warmup == 0.1


def test_resolution_forms():
    assert parse_resolution("512") == ([512], None)
    assert parse_resolution("512, 768") == ([512, 768], None)
    assert parse_resolution("768x512") == ([], (768, 512))


def test_migrations_upgrade_older_versions(monkeypatch: pytest.MonkeyPatch):
    def rename_bs(document: dict) -> list[str]:
        training = document.setdefault("training", {})
        training["batch_size"] = training.pop("batch", 1)
        return ["training.batch -> training.batch_size"]

    monkeypatch.setattr(config_io, "CONFIG_VERSION", 3)
    monkeypatch.setattr(config_io, "MIGRATIONS", {1: lambda document: [], 2: rename_bs})
    original = {"version": 1, "training": {"batch": 3}}
    migrated = config_io.migrate(original)
    assert migrated.document == {"version": 3, "training": {"batch_size": 3}}
    assert migrated.changes == ["training.batch -> training.batch_size"] and migrated.from_version == 1
    assert original == {"version": 1, "training": {"batch": 3}}


def test_save_is_atomic_and_keeps_old_file_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "c.toml"
    config = parse_config(BASE)
    save_config(config, path)
    before = path.read_text()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.replace", broken_replace)
    changed = config.model_copy(update={"method": Method.FINETUNE})
    with pytest.raises(OSError):
        save_config(changed, path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.toml"]


def test_importing_config_does_not_import_torch():
    code = "import sys, tui_trainer.config, tui_trainer.config.reference; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_config_reference_is_up_to_date():
    from tui_trainer.config.reference import config_reference

    docs = Path(__file__).resolve().parents[1] / "docs" / "config.md"
    assert docs.read_text() == config_reference(), "docs/config.md is stale: run `tui-trainer config docs -o docs/config.md`"


def test_every_field_has_help():
    from tui_trainer.config.errors import model_class_in

    def walk(model):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no docstring"
            inner = model_class_in(field.annotation)
            if inner is not None:
                walk(inner)

    walk(TrainConfig)


def test_with_absolute_paths_keeps_a_copied_config_valid(tmp_path: Path):
    from tui_trainer.config import with_absolute_paths

    (tmp_path / "data").mkdir()
    (tmp_path / "model").mkdir()
    path = tmp_path / "c.toml"
    path.write_text('[model]\nbase_model = "model"\n[workspace]\ndir = "ws"\n[[concepts]]\nname = "a"\npath = "data"\n')
    config = with_absolute_paths(load_config(path), path)
    assert config.workspace.dir == str(tmp_path / "ws")
    assert config.concepts[0].path == str(tmp_path / "data")
    assert config.model.base_model == str(tmp_path / "model")
    hub = with_absolute_paths(parse_config('[model]\nbase_model = "org/repo"\n'), path)
    assert hub.model.base_model == "org/repo"

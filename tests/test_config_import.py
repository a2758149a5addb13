"""`tui-trainer import`: OneTrainer configs of every version and its presets, kohya sd-scripts training and dataset
configs, kohya_ss GUI configs; each imports with its values, names what it could not map, and validates."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tui_trainer.config import ConfigError, check_paths, load_config
from tui_trainer.config.enums import Family
from tui_trainer.config.importing import Outcome, import_file, is_importable
from tui_trainer.config.importing.onetrainer import LATEST_VERSION

DATA = Path(__file__).parent / "data" / "import"
ONETRAINER, KOHYA, KOHYA_SS = DATA / "onetrainer", DATA / "kohya", DATA / "kohya_ss"


def outcome(report, key: str) -> Outcome:
    return next(entry.outcome for entry in report.keys if entry.key == key)


def test_onetrainer_head_preset_keeps_its_values_and_takes_onetrainer_defaults_for_the_rest():
    result = import_file(ONETRAINER / "presets" / "#sd 1.5 LoRA.json")
    config = result.config
    assert (config.model.family, config.method, config.training.batch_size) == ("sd15", "lora", 4)
    assert (config.parts.denoiser.dtype, config.parts.text_encoder.dtype, config.model.vae_dtype) == ("float16", "float16", "float32")
    assert (config.lora.targets, config.optimizer.learning_rate, config.workspace.output_format) == ("attention+mlp", 3e-4, "kohya")
    # OneTrainer's defaults, not ours: rank 16 / alpha 1, 100 epochs, the text encoder for 30 epochs, samples every 10 min
    assert (config.lora.rank, config.lora.alpha, config.training.epochs) == (16, 1.0, 100)
    assert (config.parts.text_encoder.train_for, config.parts.text_encoder.train_for_unit) == (30, "epochs")
    assert (config.sampling.every, config.sampling.unit, config.scheduler.warmup) == (10, "minutes", 200)
    assert outcome(result.report, "batch_size") is Outcome.MAPPED
    assert outcome(result.report, "lora_rank") is Outcome.DEFAULTED


def test_onetrainer_march_2024_preset_migrates_its_flat_keys():
    config = import_file(ONETRAINER / "presets" / "#sdxl 1.0 LoRA (2024-03).json").config
    assert config.model.family == "sdxl"
    assert {config.parts.denoiser.dtype, config.parts.text_encoder.dtype, config.parts.text_encoder_2.dtype} == {"float16"}
    assert (config.parts.denoiser.train_for, config.parts.text_encoder.train_for) == (100000, 30)
    assert (config.training.min_snr_gamma, config.training.cache_latents) == (5.0, False)
    assert config.optimizer.name == "adamw8bit" and config.optimizer.settings.adamw8bit.weight_decay == 0.01


def test_onetrainer_saved_config_with_concepts_and_samples_files(tmp_path: Path):
    result = import_file(ONETRAINER / "my-sd15-lora.json")
    config, report = result.config, result.report
    assert report.kind == "OneTrainer config, version 3"
    assert [Path(name).name for name in report.files] == ["concepts.json", "samples.json"]
    dog, reg = config.concepts
    assert (dog.name, dog.repeats, dog.shuffle_tags, dog.keep_tokens, dog.flip_probability) == ("sks dog", 3.0, True, 1, 0.0)
    assert dog.path == str((ONETRAINER.parent / "datasets" / "sks-dog").resolve())
    assert (reg.enabled, reg.repeats, reg.caption_source, reg.path) == (False, 0.5, "prompts_file", "/data/reg-dogs")
    assert [(s.prompt, s.steps, s.cfg, s.sampler) for s in config.samples] == [("photo of sks dog on the beach", 25, 6.5, "euler_a")]
    assert (config.parts.denoiser.dtype, config.parts.denoiser.learning_rate) == ("float16", 2e-4)  # weight_dtype fills NONE
    assert (config.parts.text_encoder.train_for, config.parts.text_encoder.learning_rate) == (10, 5e-5)
    assert (config.save.every, config.save.unit, config.backup.rolling_count) == (5, "epochs", 2)  # save_after -> save_every
    assert (config.lora.rank, config.lora.alpha, config.lora.dropout, config.training.min_snr_gamma) == (32, 16.0, 0.1, 5.0)
    assert config.optimizer.settings.adamw8bit.beta2 == 0.99 and config.scheduler.name == "cosine"
    assert outcome(report, "concepts.json[0].image.enable_random_brightness") is Outcome.UNSUPPORTED
    assert outcome(report, "prior.weight_dtype") is Outcome.UNSUPPORTED
    assert any("sks-dog" in warning and "does not exist" in warning for warning in report.warnings)
    assert [problem.key for problem in check_paths(config, None)] == ["concepts[0].path"]


@pytest.mark.parametrize(("version", "document", "key", "expected"), [
    (0, {"optimizer": "LION", "optimizer_weight_decay": 0.2}, "optimizer.settings.lion.weight_decay", 0.2),
    (0, {"train_unet": False, "text_encoder_learning_rate": 1e-5}, "parts.denoiser.train", False),
    (1, {"text_encoder": {"learning_rate": 1e-5}}, "parts.text_encoder.learning_rate", 1e-5),
    (2, {"min_snr_gamma": 3.0}, "training.min_snr_gamma", 3.0),
    (5, {"save_after": 4, "save_after_unit": "STEP"}, "save.unit", "steps"),
    (7, {"lora_layer_preset": "attn-only"}, "lora.targets", "attention"),
    (9, {"weight_dtype": "BFLOAT_16", "unet": {"weight_dtype": "NONE"}}, "parts.denoiser.dtype", "bfloat16"),
    (10, {"gradient_checkpointing": "OFF"}, "training.gradient_checkpointing", False),
    (11, {"latent_caching": False}, "training.cache_latents", False),
    (LATEST_VERSION, {"unet": {"stop_training_after": 3, "stop_training_after_unit": "STEP"}}, "parts.denoiser.train_for", 3),
])
def test_onetrainer_versions_migrate_step_by_step(tmp_path: Path, version, document, key, expected):
    source = tmp_path / "config.json"
    source.write_text(json.dumps({"__version": version, "training_method": "LORA", "model_type": "STABLE_DIFFUSION_15", **document}))
    node = import_file(source).config
    for part in key.split("."):
        node = getattr(node, part)
    assert node == expected


@pytest.mark.parametrize(("text", "message"), [
    ('{"__version": 13, "model_type": "STABLE_DIFFUSION_15"}', "newer than the OneTrainer config versions"),
    ('{"model_type": "STABLE_DIFFUSION_15"', "is not valid JSON"),
    ('{"model_type": "WUERSTCHEN_2"}', "'WUERSTCHEN_2' cannot be imported; importable: STABLE_DIFFUSION_15"),
    ('{"hello": "world"}', "is not an importable config"),
])
def test_bad_sources_are_errors_naming_the_file(tmp_path: Path, text: str, message: str):
    source = tmp_path / "source.json"
    source.write_text(text)
    with pytest.raises(ConfigError) as error:
        import_file(source)
    assert str(source) in str(error.value) and message in str(error.value)
    assert not is_importable(source) or "cannot be imported" in message or "newer" in message


def test_kohya_training_config_reads_its_dataset_config_with_inheritance():
    result = import_file(KOHYA / "lora-sd15.toml")
    config, report = result.config, result.report
    assert (config.method, config.lora.rank, config.lora.alpha, config.lora.targets) == ("lora", 32, 16.0, "full")
    assert (config.optimizer.name, config.optimizer.settings.adamw8bit.beta2) == ("adamw8bit", 0.99)
    assert (config.scheduler.name, config.scheduler.cycles, config.scheduler.warmup) == ("cosine_with_restarts", 3, 50)
    assert (config.training.epochs, config.training.batch_size, config.training.resolution) == (12, 4, "512")
    hoge, fuga, reg, piyo = config.concepts
    assert (hoge.repeats, hoge.keep_tokens, hoge.shuffle_tags) == (10.0, 2, True)  # dataset overrides general
    assert (fuga.keep_tokens, piyo.keep_tokens, piyo.resolution, piyo.flip_probability) == (3, 1, "768", 0.5)
    assert reg.enabled is False
    assert any(".caption" in warning and "subsets[1]" in warning for warning in report.warnings)
    first = config.samples[0]
    assert (first.negative_prompt, first.width, first.height, first.seed, first.cfg, first.steps) == ("lowres, blurry", 512, 768, 7, 7.5, 28)
    assert outcome(report, "clip_skip") is Outcome.UNSUPPORTED


def test_kohya_dataset_config_alone_uses_the_default_caption_extension():
    result = import_file(KOHYA / "dataset-only.toml")
    (cats,) = result.config.concepts
    assert (cats.path, cats.repeats, result.config.training.resolution) == ("/srv/data/cats", 4.0, "1024")
    assert any("<image>.caption here (its default)" in warning for warning in result.report.warnings)


def kohya_ss_copy(tmp_path: Path, name: str) -> Path:
    """A GUI config beside an img/ folder of '<repeats>_<name>' folders."""
    for folder in ("10_sks dog", "2_style"):
        (tmp_path / "img" / folder).mkdir(parents=True)
    return Path(shutil.copy(KOHYA_SS / name, tmp_path / name))


def test_kohya_ss_standard_lora(tmp_path: Path):
    result = import_file(kohya_ss_copy(tmp_path, "sd15 - LoRA standard.json"))
    config = result.config
    assert (config.model.family, config.training.epochs, config.training.max_steps, config.scheduler.warmup) == ("sd15", 10, None, 0.1)
    assert [(c.name, c.repeats, c.caption_prefix) for c in config.concepts] == [("10_sks dog", 10.0, "sks dog"), ("2_style", 2.0, "style")]
    assert (config.optimizer.settings.adamw.weight_decay, config.workspace.run_name) == (0.1, "my-lora")
    assert outcome(result.report, "epoch") is Outcome.MAPPED


def test_kohya_ss_sdxl_loha_prodigy(tmp_path: Path):
    config = import_file(kohya_ss_copy(tmp_path, "SDXL - LoHa.json")).config
    assert (config.model.family, config.lora.type, config.optimizer.name) == ("sdxl", "loha", "prodigy")
    assert (config.optimizer.settings.prodigy.d_coef, config.training.attention) == (2, "xformers")


@pytest.mark.parametrize(("source", "family"), [
    (ONETRAINER / "presets" / "#flux LoRA.json", "flux1_dev"),
    (ONETRAINER / "presets" / "#chroma LoRA.json", "chroma"),
    (KOHYA_SS / "flux1D - adamw8bit fp8.json", "flux1_dev"),
])
def test_flux_and_chroma_sources(source: Path, family: str):
    if family not in Family._value2member_map_:
        with pytest.raises(ConfigError, match=family):
            import_file(source)
        pytest.skip(f"this tui-trainer has no family {family!r} yet")
    config = import_file(source).config
    assert config.model.family == family and config.method == "lora"


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui_trainer.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_import_writes_a_config_that_validates_but_for_its_dataset_paths(tmp_path: Path):
    result = run_cli("import", str(KOHYA / "lora-sd15.toml"), "-o", "out.toml", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["output"] == "out.toml" and {"mapped", "defaulted", "not supported"} <= {k["outcome"] for k in printed["report"]["keys"]}
    assert load_config(tmp_path / "out.toml").lora.rank == 32
    validated = run_cli("config", "validate", "out.toml", cwd=tmp_path)
    assert validated.returncode == 2
    assert [line for line in validated.stderr.splitlines() if "does not exist" not in line] == []


def test_cli_import_writes_nothing_on_bad_input_and_never_over_the_source(tmp_path: Path):
    (tmp_path / "bad.json").write_text("{")
    result = run_cli("import", "bad.json", "-o", "out.toml", cwd=tmp_path)
    assert result.returncode == 2 and "bad.json: is not valid JSON" in result.stderr and not (tmp_path / "out.toml").exists()
    source = Path(shutil.copy(KOHYA / "dataset-only.toml", tmp_path / "dataset.toml"))
    before = source.read_text()
    result = run_cli("import", "dataset.toml", "-o", "dataset.toml", "--force", cwd=tmp_path)
    assert result.returncode == 2 and "is the source" in result.stderr and source.read_text() == before

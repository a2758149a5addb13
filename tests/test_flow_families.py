"""FLUX.1 and Chroma: the flow objective against diffusers' own scheduler, nf4-base LoRA on the CPU, presets that
train and resume, and LoRA files that change the image in FluxPipeline / ChromaPipeline."""

from __future__ import annotations

from pathlib import Path

import pytest

from tui_trainer.config.enums import Family, TimestepSampling

FLOW_FAMILIES = (Family.FLUX1_DEV, Family.FLUX1_SCHNELL, Family.CHROMA)
PRESETS = {Family.FLUX1_DEV: "flux1-dev-lora", Family.FLUX1_SCHNELL: "flux1-schnell-lora", Family.CHROMA: "chroma-lora"}


def _schedule(family: Family, **flow):
    from tui_trainer.config.schema import FlowConfig
    from tui_trainer.devkit.tiny_families import build_tiny_chroma, build_tiny_flux
    from tui_trainer.train.families.flow import FlowSchedule

    pipeline = build_tiny_chroma() if family is Family.CHROMA else build_tiny_flux(guidance=family is Family.FLUX1_DEV)
    return FlowSchedule(FlowConfig(**flow), pipeline.scheduler, 512)


@pytest.mark.parametrize("tokens", [256, 1024, 4096])
def test_resolution_shift_equals_the_pipelines_own(tokens: int):
    """Training noise levels are shifted exactly as FluxPipeline shifts its sampling sigmas at that image size."""
    import numpy as np
    import torch
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    schedule = _schedule(Family.FLUX1_DEV)
    levels = torch.linspace(0.05, 0.95, 7)
    scheduler, config = schedule.scheduler, schedule.scheduler.config
    mu = calculate_shift(tokens, config.base_image_seq_len, config.max_image_seq_len, config.base_shift, config.max_shift)
    scheduler.set_timesteps(sigmas=levels.numpy().astype(np.float32), mu=mu)
    assert torch.allclose(schedule.shift(levels, tokens), scheduler.sigmas[:-1], atol=1e-5)
    assert (schedule.shift(levels, 4096) > schedule.shift(levels, 256)).all()  # bigger images: noisier levels


def test_fixed_shift_and_schnell_without_shift():
    import torch

    levels = torch.tensor([0.25, 0.5, 0.75])
    assert torch.allclose(_schedule(Family.FLUX1_SCHNELL).shift(levels, 4096), levels)
    assert torch.allclose(_schedule(Family.FLUX1_DEV, shift=3.0).shift(levels, 4096), 3 * levels / (1 + 2 * levels))


@pytest.mark.parametrize("sampling", list(TimestepSampling))
def test_level_draws_follow_their_distribution(sampling: TimestepSampling):
    import torch

    schedule = _schedule(Family.FLUX1_SCHNELL, timestep_sampling=sampling, logit_mean=1.0)
    levels = schedule.sigmas(20000, 1024, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert 0 < float(levels.min()) and float(levels.max()) < 1
    median = {TimestepSampling.UNIFORM: 0.5, TimestepSampling.SIGMOID: 0.5, TimestepSampling.LOGIT_NORMAL: float(torch.sigmoid(torch.tensor(1.0)))}
    assert abs(float(levels.median()) - median[sampling]) < 0.02
    spread = float(levels.std())
    assert spread > 0.25 if sampling is TimestepSampling.UNIFORM else spread < 0.25


@pytest.mark.parametrize(("family", "label"), [
    ("flux1_dev", "FLUX.1-dev (12B)"), ("z_image", "Z-Image (6B; base and Turbo)"), ("qwen_image", "Qwen-Image (20B)"),
])
def test_embedding_and_inpaint_are_refused_at_validate_time(family: str, label: str, tmp_path: Path, capsys):
    from tui_trainer.cli import main

    for method in ("embedding", "inpaint"):
        path = tmp_path / f"{method}.toml"
        path.write_text(f'version = 2\nmethod = "{method}"\n[model]\nfamily = "{family}"\nbase_model = "x/y"\n')
        assert main(["config", "validate", str(path)]) == 2
        assert f"method: '{method}' is not available for {label}; available: lora, finetune" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_flow(tmp_path_factory: pytest.TempPathFactory):
    """Factory: the tiny model folder of a flow family and a 64 px dataset, built once each."""
    from tui_trainer.devkit.datasets import make_dataset
    from tui_trainer.devkit.tiny_families import save_tiny_model

    root = tmp_path_factory.mktemp("flow")
    data = make_dataset(root / "data", ((64, 64, 4),))
    return lambda family: (save_tiny_model(root / family.value, family), data)


def _preset_config(folder: Path, family: Family, model: Path, data: Path, preset: str = "", **training) -> Path:
    """The family's shipped preset (or `preset`) on the tiny model and dataset (train_support.flow_preset_config)."""
    from train_support import flow_preset_config

    return flow_preset_config(folder, preset or PRESETS[family], model, data, {"prompt": "red, circle"}, **training)


def _image(family: Family, model: Path, lora: Path | None = None):
    import numpy as np
    import torch
    from diffusers import DiffusionPipeline

    pipeline = DiffusionPipeline.from_pretrained(str(model))
    if lora is not None:
        pipeline.load_lora_weights(str(lora))
    image = pipeline("red, circle", width=64, height=64, num_inference_steps=2, generator=torch.Generator().manual_seed(1),
                     max_sequence_length=32).images[0]
    return np.asarray(image, dtype=np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("family", FLOW_FAMILIES, ids=lambda family: family.value)
def test_preset_lora_trains_resumes_exactly_and_changes_the_image(family: Family, tiny_flow, tmp_path: Path):
    """The shipped preset (nf4 base where it says so) trains the tiny model; a run stopped at step 2 and resumed ends
    with the same LoRA as one that ran straight; that LoRA loads with the pipeline's own loader and changes the image."""
    from safetensors.torch import load_file

    from tui_trainer.cli import main
    from train_support import stop_and_resume

    model, data = tiny_flow(family)
    straight = _preset_config(tmp_path / "straight", family, model, data)
    assert main(["train", str(straight)]) == 0
    (run,) = (tmp_path / "straight" / "ws" / "runs").iterdir()
    lora = run / "output" / "tiny"
    assert (lora / "pytorch_lora_weights.safetensors").is_file()
    assert sorted(path.name for path in (run / "samples").iterdir()) == ["step-000002-0.png", "step-000004-0.png"]

    resumed = stop_and_resume(_preset_config(tmp_path / "interrupted", family, model, data), 2)
    expected = load_file(str(lora / "pytorch_lora_weights.safetensors"))
    actual = load_file(str(resumed / "output" / "tiny" / "pytorch_lora_weights.safetensors"))
    assert expected.keys() == actual.keys() and all(expected[key].equal(actual[key]) for key in expected)
    assert all(key.startswith("transformer.") for key in expected)

    before, after = _image(family, model), _image(family, model, lora)
    assert abs(after - before).max() > 1.0


def test_nf4_base_is_quantized_on_the_cpu_and_lora_wraps_it(tiny_flow, tmp_path: Path):
    """parts.denoiser.dtype = nf4: every Linear of the transformer is a bitsandbytes 4-bit layer, LoRA trains on top."""
    from train_support import assert_nf4_with_lora_on_top, finish, train_in_process

    model, data = tiny_flow(Family.FLUX1_DEV)
    recipe = train_in_process(_preset_config(tmp_path, Family.FLUX1_DEV, model, data))
    try:
        assert_nf4_with_lora_on_top(recipe.accelerator.unwrap_model(recipe.model.unet))
    finally:
        finish(recipe)


def test_a_run_frees_its_text_encoders_after_caching_and_still_samples(tiny_flow, tmp_path: Path):
    """The preset caches text outputs: after caching the recipe holds no text encoder, and the samples of steps 2 and
    4 are written from the prompt embeddings encoded before."""
    from train_support import finish, train_in_process

    model, data = tiny_flow(Family.FLUX1_DEV)
    recipe = train_in_process(_preset_config(tmp_path, Family.FLUX1_DEV, model, data))
    try:
        assert recipe.model.text_encoders == {}
        assert recipe.model.freed_text_encoders == ("text_encoder", "text_encoder_2")
        assert sorted(path.name for path in recipe.run.samples_dir.iterdir()) == ["step-000002-0.png", "step-000004-0.png"]
        assert "text encoders freed" in recipe.run.log_file.read_text()
    finally:
        finish(recipe)


def test_the_8_gb_preset_trains_on_the_cpu_without_offload_and_with_an_nf4_t5(tiny_flow, tmp_path: Path):
    """flux1-dev-lora-8gb on the CPU: block offload has nowhere to offload to (a warning, no hooks), T5 is quantized to
    nf4 for the caching pass and freed after it, the LoRA trains on the nf4 transformer."""
    from train_support import assert_nf4_with_lora_on_top, finish, train_in_process

    model, data = tiny_flow(Family.FLUX1_DEV)
    config = _preset_config(tmp_path, Family.FLUX1_DEV, model, data, "flux1-dev-lora-8gb", gradient_checkpointing=True)
    recipe = train_in_process(config)
    try:
        assert_nf4_with_lora_on_top(recipe.accelerator.unwrap_model(recipe.model.unet))
        assert recipe.model.freed_text_encoders == ("text_encoder", "text_encoder_2")
        assert "flow.offload" in recipe.run.events_file.read_text()  # the CPU warning names the setting
    finally:
        finish(recipe)


FLOW_PRESETS = ("flux1-dev-lora", "flux1-dev-lora-8gb", "flux1-dev-lora-fp8", "flux1-schnell-lora", "chroma-lora",
                "flux1-dev-finetune")


@pytest.mark.parametrize("name", FLOW_PRESETS)
def test_preset_estimates_carry_exact_sizes_every_phase_and_agree_with_the_comment(name: str):
    """Exact part sizes, VRAM and RAM for every phase, nf4 at most 0.6 B a parameter, and the comment's 'about N GB'
    within 1 GB of the estimate, under the GPU class it names."""
    from train_support import assert_flow_preset_estimate
    from tui_trainer.config import load_preset
    from tui_trainer.estimate import estimate

    config = load_preset(name)
    result = estimate(config)
    sizes = {"transformer": {Family.FLUX1_DEV: 11_901_408_320, Family.FLUX1_SCHNELL: 11_891_178_560,
                             Family.CHROMA: 8_899_983_424}[config.model.family]}
    assert result.parts["transformer"].params == sizes["transformer"]
    t5 = "text_encoder" if config.model.family is Family.CHROMA else "text_encoder_2"
    assert result.parts[t5].params == 4_762_310_656
    if config.model.family is not Family.CHROMA:
        assert result.parts["text_encoder"].params == 123_060_480
    assert_flow_preset_estimate(name, result)
    assert set(result.to_json()["phases"]["training_step"]) == {"vram_bytes", "ram_bytes"}

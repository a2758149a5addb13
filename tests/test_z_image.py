"""Z-Image: the transformer is called as ZImagePipeline calls it, presets train, resume bit-exactly and estimate what
their comments say, an nf4 base trains on the CPU, and the LoRA file changes the image in ZImagePipeline."""

from __future__ import annotations

from pathlib import Path

import pytest

from tui_trainer.config.enums import Family

LORA_PRESETS = ("z-image-lora", "z-image-lora-8gb", "z-image-lora-bf16")
PRESETS = (*LORA_PRESETS, "z-image-finetune")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """The tiny Z-Image folder and a 64 px dataset, built once."""
    from tui_trainer.devkit.datasets import make_dataset
    from tui_trainer.devkit.tiny_families import save_tiny_model

    root = tmp_path_factory.mktemp("z-image")
    return save_tiny_model(root / "model", Family.Z_IMAGE), make_dataset(root / "data", ((64, 64, 4),))


def test_velocity_and_timestep_are_the_pipelines(tiny):
    """One Euler step of ZImagePipeline from given latents equals latents + (0 - sigma) x our velocity at that sigma: the
    timestep (1 - sigma), the per-image frame axis and the negated output are the pipeline's. The caption features
    are the pipeline's own encode_prompt, padded and masked."""
    from types import SimpleNamespace

    import torch
    from diffusers import DiffusionPipeline

    from tui_trainer.config.schema import FlowConfig
    from tui_trainer.train.families.flow import FlowSchedule
    from tui_trainer.train.families.z_image import velocity, z_image_conditioning

    model_path, _ = tiny
    pipeline = DiffusionPipeline.from_pretrained(str(model_path))
    latents = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(0))
    stepped = pipeline("red, circle", width=64, height=64, sigmas=[0.6], guidance_scale=0.0, latents=latents.clone(),
                       max_sequence_length=32, output_type="latent").images
    sigma = float(pipeline.scheduler.sigmas[0])
    assert 0.6 < sigma < 1  # Turbo's fixed shift 3 moved it

    parts = SimpleNamespace(text_encoders={"text_encoder": pipeline.text_encoder}, tokenizers={"tokenizer": pipeline.tokenizer},
                            noise_scheduler=FlowSchedule(FlowConfig(), pipeline.scheduler, 32))
    conditioning = z_image_conditioning(parts, ["red, circle"], torch.device("cpu"))
    (expected,), _ = pipeline.encode_prompt(["red, circle"], do_classifier_free_guidance=False, max_sequence_length=32)
    mask = conditioning["text_mask"][0]
    assert conditioning["encoder_hidden_states"].shape[1] == 32 and 0 < int(mask.sum()) < 32
    assert torch.equal(conditioning["encoder_hidden_states"][0][mask], expected)

    with torch.no_grad():
        ours = latents - sigma * velocity(pipeline.transformer, latents, torch.tensor([sigma]), [expected])
    assert torch.allclose(stepped, ours, atol=1e-5)
    with torch.no_grad():
        wrong_time = latents - sigma * -torch.stack(pipeline.transformer([latents[0].unsqueeze(1)], torch.tensor([sigma]), [expected],
                                                                          return_dict=False)[0]).squeeze(2)
    assert not torch.allclose(stepped, wrong_time, atol=1e-3)  # the test tells the timestep conventions apart


def _preset_config(folder: Path, preset: str, model: Path, data: Path, **training) -> Path:
    """A shipped preset on the tiny model and dataset (train_support.flow_preset_config), sampled without CFG."""
    from train_support import flow_preset_config

    return flow_preset_config(folder, preset, model, data, {"prompt": "red, circle", "cfg": 0.0}, **training)


def _image(model: Path, lora: Path | None = None):
    import numpy as np
    import torch
    from diffusers import DiffusionPipeline

    pipeline = DiffusionPipeline.from_pretrained(str(model))
    if lora is not None:
        pipeline.load_lora_weights(str(lora))
    image = pipeline("red, circle", width=64, height=64, num_inference_steps=2, guidance_scale=0.0,
                     generator=torch.Generator().manual_seed(1), max_sequence_length=32).images[0]
    return np.asarray(image, dtype=np.float32)


@pytest.mark.slow
def test_preset_lora_trains_resumes_exactly_and_changes_the_image(tiny, tmp_path: Path):
    """z-image-lora (fp8 transformer) trains the tiny model; a run stopped at step 2 and resumed ends with the same LoRA
    as one that ran straight; that LoRA loads with ZImagePipeline.load_lora_weights and changes the image."""
    from safetensors.torch import load_file

    from tui_trainer.cli import main
    from train_support import stop_and_resume

    model, data = tiny
    straight = _preset_config(tmp_path / "straight", "z-image-lora", model, data)
    assert main(["train", str(straight)]) == 0
    (run,) = (tmp_path / "straight" / "ws" / "runs").iterdir()
    lora = run / "output" / "tiny"
    assert sorted(path.name for path in (run / "samples").iterdir()) == ["step-000002-0.png", "step-000004-0.png"]

    resumed = stop_and_resume(_preset_config(tmp_path / "interrupted", "z-image-lora", model, data), 2)
    expected = load_file(str(lora / "pytorch_lora_weights.safetensors"))
    actual = load_file(str(resumed / "output" / "tiny" / "pytorch_lora_weights.safetensors"))
    assert expected.keys() == actual.keys() and all(expected[key].equal(actual[key]) for key in expected)
    assert all(key.startswith("transformer.") for key in expected)
    assert any(".feed_forward.w1.lora_A." in key for key in expected)  # attention+mlp: the SwiGLU projections too

    before, after = _image(model), _image(model, lora)
    assert abs(after - before).max() > 1.0


def test_nf4_base_and_text_encoder_are_quantized_on_the_cpu_and_lora_wraps_it(tiny, tmp_path: Path):
    """z-image-lora-8gb: every Linear of the transformer and of Qwen3 is a bitsandbytes 4-bit layer; LoRA trains on top.
    (Without the text cache, so Qwen3 is not freed after caching.)"""
    from train_support import assert_nf4_with_lora_on_top, finish, train_in_process

    model, data = tiny
    recipe = train_in_process(_preset_config(tmp_path, "z-image-lora-8gb", model, data, cache_text_encoder_outputs=False))
    try:
        transformer = recipe.accelerator.unwrap_model(recipe.model.unet)
        assert_nf4_with_lora_on_top(transformer, recipe.model.text_encoders["text_encoder"])
    finally:
        finish(recipe)


def test_fp8_transformer_keeps_its_embedders_in_the_compute_dtype(tiny, tmp_path: Path):
    """z-image-lora: the transformer's linears are stored in float8, except the timestep and caption embedders the model
    names precision-sensitive (they cast their input to their weights' dtype)."""
    import torch

    from train_support import finish, train_in_process

    model, data = tiny
    recipe = train_in_process(_preset_config(tmp_path, "z-image-lora", model, data))
    try:
        transformer = recipe.accelerator.unwrap_model(recipe.model.unet)
        assert transformer.layers[0].attention.to_q.base_layer.weight.dtype == torch.float8_e4m3fn
        assert transformer.t_embedder.mlp[0].weight.dtype == transformer.cap_embedder[1].weight.dtype == torch.float32
    finally:
        finish(recipe)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_estimates_carry_exact_sizes_every_phase_and_agree_with_the_comment(name: str):
    """Exact part sizes, VRAM and RAM for every phase, and the comment's 'about N GiB' within 1 GiB of the estimate,
    under the GPU class it names."""
    from train_support import assert_flow_preset_estimate
    from tui_trainer.config import load_preset
    from tui_trainer.estimate import estimate

    config = load_preset(name)
    result = estimate(config)
    assert config.model.family is Family.Z_IMAGE
    assert result.parts["transformer"].params == 6_154_908_736
    assert result.parts["text_encoder"].params == 4_022_468_096
    assert result.parts["vae"].params == 83_819_683
    assert_flow_preset_estimate(name, result)


async def test_editor_shows_the_flow_fields_and_z_images_parts(tmp_path: Path):
    """Training has the flow-matching fields and not the DDPM ones; Model & method names Qwen3-4B's dtype table."""
    from test_tui_editor import goto, open_editor, write_preset
    from tui_support import make_app, screen_text, wait_for

    from tui_trainer.tui.widgets.field_editor import FieldEditor

    app = make_app(tmp_path, write_preset(tmp_path / "z.toml", "z-image-lora"))
    async with app.run_test(size=(120, 60)) as pilot:
        screen = await open_editor(pilot, app)
        await wait_for(pilot, lambda: "Text encoder (Qwen3-4B) weights" in screen_text(app))
        assert not screen.current.query("#field-model-prediction_type")
        await goto(pilot, screen, "training")
        fields = {editor.id for editor in screen.current.query(FieldEditor)}
        assert {"field-flow-timestep_sampling", "field-flow-shift", "field-flow-max_sequence_length"} <= fields
        assert "field-training-min_snr_gamma" not in fields and "field-flow-guidance" not in fields

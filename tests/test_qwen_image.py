"""Qwen-Image: the offline tokenizer drops exactly the pipeline's template, latents invert the pipeline's decode, the
transformer is called as QwenImagePipeline calls it, the preset trains the tiny model and resumes bit-exactly, its LoRA
changes QwenImagePipeline's image, nf4 runs on the CPU, and the preset's estimate agrees with its comment."""

from __future__ import annotations

from pathlib import Path

import pytest

from tui_trainer.config.enums import Family

PRESET = "qwen-image-lora"
PRESETS = (PRESET, "qwen-image-lora-16gb")
PROMPT = "red, circle"


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory: pytest.TempPathFactory):
    """The tiny Qwen-Image folder and a 64 px dataset, built once."""
    from tui_trainer.devkit.datasets import make_dataset
    from tui_trainer.devkit.tiny_families import save_tiny_model

    root = tmp_path_factory.mktemp("qwen")
    return save_tiny_model(root / "qwen-image", Family.QWEN_IMAGE), make_dataset(root / "data", ((64, 64, 4),))


def test_tiny_tokenizer_drops_exactly_the_prompt_template():
    """prompt_template_encode_start_idx removes the system prompt, as with Qwen's own tokenizer."""
    from tui_trainer.devkit.tiny_families import build_tiny_qwen_image

    pipeline = build_tiny_qwen_image()
    start = pipeline.prompt_template_encode_start_idx
    ids = pipeline.tokenizer(pipeline.prompt_template_encode.format(PROMPT)).input_ids
    assert pipeline.tokenizer.decode(ids[:start]).endswith("background:<|im_end|>\n<|im_start|>user\n")
    assert pipeline.tokenizer.decode(ids[start:]) == PROMPT + "<|im_end|>\n<|im_start|>assistant\n"


def test_latents_are_normalised_as_the_pipeline_decodes_them():
    """latents x std + mean (QwenImagePipeline's decode) gives back the VAE's own one-frame latents."""
    import torch

    from tui_trainer.devkit.tiny_families import build_tiny_qwen_image
    from tui_trainer.train.families.qwen_image import qwen_image_encode

    vae = build_tiny_qwen_image().vae
    pixels = torch.rand(2, 3, 64, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    latents = qwen_image_encode(vae, pixels)
    assert latents.shape == (2, 16, 8, 6)
    std = 1.0 / torch.tensor(vae.config.latents_std).view(1, 16, 1, 1)
    mean = torch.tensor(vae.config.latents_mean).view(1, 16, 1, 1)
    with torch.no_grad():
        raw = vae.encode(pixels[:, :, None]).latent_dist.mode()[:, :, 0]
    assert torch.allclose(latents / std + mean, raw, atol=1e-5)
    assert not torch.allclose(latents, raw, atol=1e-2)


def test_training_calls_the_transformer_as_the_pipeline_does():
    """Same arguments, img_shapes and timestep scale (the noise level in (0, 1)) as QwenImagePipeline's call; padded
    text is trimmed back to the caption's length with its mask."""
    import torch

    from tui_trainer.config.schema import FlowConfig, TrainingConfig
    from tui_trainer.devkit.tiny_families import build_tiny_qwen_image
    from tui_trainer.train.families.flow import FlowSchedule
    from tui_trainer.train.families.qwen_image import qwen_image_conditioning, qwen_image_loss
    from tui_trainer.train.model_parts import ModelParts

    pipeline = build_tiny_qwen_image()
    calls = []
    forward = pipeline.transformer.forward

    def record(**kwargs):
        calls.append(kwargs)
        return forward(**kwargs)

    pipeline.transformer.forward = record
    pipeline(PROMPT, negative_prompt=None, width=64, height=48, num_inference_steps=2, true_cfg_scale=1.0)
    model = ModelParts(Family.QWEN_IMAGE, type(pipeline), pipeline.transformer, pipeline.vae,
                       FlowSchedule(FlowConfig(), pipeline.scheduler, 40), "flow",
                       {"text_encoder": pipeline.text_encoder}, {"tokenizer": pipeline.tokenizer})
    conditioning = qwen_image_conditioning(model, [PROMPT, "blue"], torch.device("cpu"))
    assert conditioning["encoder_hidden_states"].shape[:2] == (2, 40)
    assert conditioning["encoder_hidden_states_mask"].sum(dim=1).tolist() == [15, 9]  # template tokens after the 34th
    latents = torch.randn(2, 16, 6, 8)
    loss = qwen_image_loss(model, latents, conditioning, TrainingConfig(), torch.Generator().manual_seed(0), torch.float32,
                           torch.no_grad)
    sampled, _, trained = calls
    assert float(loss) > 0
    assert set(trained) == set(sampled) - {"guidance", "attention_kwargs"} and sampled["guidance"] is None
    assert sampled["img_shapes"] == [[(1, 3, 4)]] and trained["img_shapes"] == [[(1, 3, 4)]] * 2
    assert 0 < float(sampled["timestep"].max()) <= 1 and 0 < float(trained["timestep"].max()) < 1
    assert trained["encoder_hidden_states"].shape[1] == 15 and trained["encoder_hidden_states_mask"].tolist()[1] == [1] * 9 + [0] * 6
    assert trained["hidden_states"].shape == (2, 12, 64) and sampled["hidden_states"].shape == (1, 12, 64)


def _preset_config(folder: Path, model: Path, data: Path, preset: str = PRESET, denoiser_dtype: str = "", **training) -> Path:
    """The shipped preset on the tiny model and dataset (train_support.flow_preset_config), sampled at true CFG 4."""
    from train_support import flow_preset_config

    return flow_preset_config(folder, preset, model, data, {"prompt": PROMPT, "cfg": 4.0}, denoiser_dtype, **training)


def _image(model: Path, lora: Path | None = None):
    import numpy as np
    import torch
    from diffusers import DiffusionPipeline

    pipeline = DiffusionPipeline.from_pretrained(str(model))
    if lora is not None:
        pipeline.load_lora_weights(str(lora))
    image = pipeline(PROMPT, width=64, height=64, num_inference_steps=2, generator=torch.Generator().manual_seed(1),
                     max_sequence_length=32).images[0]
    return np.asarray(image, dtype=np.float32)


@pytest.mark.slow
def test_preset_lora_trains_resumes_exactly_and_changes_the_image(tiny_qwen, tmp_path: Path):
    """The shipped preset (nf4 base) trains the tiny model; a run stopped at step 2 and resumed ends with the same
    LoRA as one that ran straight; that LoRA loads with QwenImagePipeline.load_lora_weights and changes the image."""
    from safetensors.torch import load_file

    from tui_trainer.cli import main
    from train_support import stop_and_resume

    model, data = tiny_qwen
    straight = _preset_config(tmp_path / "straight", model, data)
    assert main(["train", str(straight)]) == 0
    (run,) = (tmp_path / "straight" / "ws" / "runs").iterdir()
    lora = run / "output" / "tiny"
    assert sorted(path.name for path in (run / "samples").iterdir()) == ["step-000002-0.png", "step-000004-0.png"]

    resumed = stop_and_resume(_preset_config(tmp_path / "interrupted", model, data), 2)
    expected = load_file(str(lora / "pytorch_lora_weights.safetensors"))
    actual = load_file(str(resumed / "output" / "tiny" / "pytorch_lora_weights.safetensors"))
    assert expected.keys() == actual.keys() and all(expected[key].equal(actual[key]) for key in expected)
    assert all(key.startswith("transformer.transformer_blocks.") for key in expected)
    assert any(".img_mlp.net.2.lora_B." in key for key in expected) and any(".attn.add_q_proj.lora_A." in key for key in expected)

    before, after = _image(model), _image(model, lora)
    assert abs(after - before).max() > 1.0


@pytest.mark.parametrize("preset", PRESETS)
def test_nf4_base_is_quantized_on_the_cpu_and_lora_wraps_it(preset: str, tiny_qwen, tmp_path: Path):
    """parts.denoiser.dtype = nf4 (both presets; the 16 GB one's text encoder too): every Linear is a bitsandbytes 4-bit
    layer, LoRA trains on top. (Without the text cache, so the text encoder is not freed after caching.)"""
    from train_support import assert_nf4_with_lora_on_top, finish, train_in_process

    model, data = tiny_qwen
    recipe = train_in_process(_preset_config(tmp_path, model, data, preset, max_steps=2, cache_text_encoder_outputs=False))
    try:
        text_encoder = [recipe.model.text_encoders["text_encoder"]] if preset != PRESET else []
        assert_nf4_with_lora_on_top(recipe.accelerator.unwrap_model(recipe.model.unet), *text_encoder)
    finally:
        finish(recipe)


def test_fp8_base_stores_the_transformer_in_float8(tiny_qwen, tmp_path: Path):
    """parts.denoiser.dtype = float8: the transformer's Linear weights are stored as float8_e4m3fn, LoRA trains on top."""
    import tomllib

    import torch

    from train_support import finish, train_in_process

    model, data = tiny_qwen
    path = _preset_config(tmp_path, model, data, denoiser_dtype="float8", max_steps=2)
    assert tomllib.loads(path.read_text())["parts"]["denoiser"]["dtype"] == "float8"
    recipe = train_in_process(path)
    try:
        transformer = recipe.accelerator.unwrap_model(recipe.model.unet)
        stored = {name: layer.weight.dtype for name, layer in transformer.named_modules()
                  if type(layer) is torch.nn.Linear and "lora_" not in name}
        blocks = {name: dtype for name, dtype in stored.items() if name.startswith("transformer_blocks.")}
        assert blocks and set(blocks.values()) == {torch.float8_e4m3fn}  # diffusers keeps the in / out projections
        trained = [param for name, param in transformer.named_parameters() if param.requires_grad]
        assert trained and any(float(param.detach().abs().max()) > 0 for param in trained)
    finally:
        finish(recipe)


def test_cached_text_of_another_length_is_not_reused(tiny_qwen, tmp_path: Path):
    """Two runs sharing a cache folder with different flow.max_sequence_length each get captions of their own length."""
    import tomllib

    from train_support import finish, train_in_process

    from safetensors.torch import load_file

    model, data = tiny_qwen
    for length in (32, 48):
        path = _preset_config(tmp_path / str(length), model, data, max_steps=1)
        path.write_text(path.read_text().replace("max_sequence_length = 32", f"max_sequence_length = {length}")
                        .replace(f'dir = "{tmp_path / str(length) / "ws"}"', f'dir = "{tmp_path / "ws"}"'))
        assert tomllib.loads(path.read_text())["flow"]["max_sequence_length"] == length
        finish(train_in_process(path))
    cached = [load_file(str(file))["encoder_hidden_states"].shape[0] for file in (tmp_path / "ws").rglob("text/*/*.safetensors")]
    assert sorted(set(cached)) == [32, 48] and cached.count(32) == cached.count(48)


@pytest.mark.parametrize("preset", (*PRESETS, "qwen-image-lora-8gb"))
def test_preset_estimate_carries_exact_sizes_every_phase_and_agrees_with_the_comment(preset: str):
    """Exact part sizes, VRAM and RAM for every phase, nf4 at most 0.6 B a parameter, and the comment's 'about N GiB'
    within 1 GiB of the estimate, under the GPU class it names."""
    from train_support import assert_flow_preset_estimate
    from tui_trainer.config import load_preset
    from tui_trainer.estimate import estimate

    result = estimate(load_preset(preset))
    assert result.parts["transformer"].params == 20_430_401_088
    assert result.parts["text_encoder"].params == 8_292_166_656
    assert result.parts["vae"].params == 126_892_531
    assert load_preset(preset).parts.denoiser.dtype.value == "nf4"  # every preset: the 0.6 B bound below applies
    assert_flow_preset_estimate(preset, result)


def test_the_8_gb_preset_fits_by_offloading_the_blocks():
    """The nf4 transformer alone is larger than 8 GiB; with block offload the GPU keeps one prefetched group pair, and
    the training step's weights stay under 1 GiB."""
    from tui_trainer.config import load_preset
    from tui_trainer.estimate import estimate
    from tui_trainer.units import GIB

    result = estimate(load_preset("qwen-image-lora-8gb"))
    assert result.parts["transformer"].bytes / GIB > 8
    assert result.offload is not None and result.offload.block_bytes / GIB > 10
    assert result.breakdown["weights"] / GIB < 1


async def test_the_editor_shows_the_flow_settings_for_qwen_image(tmp_path: Path):
    """The Training section lists the [flow] fields for Qwen-Image (not FLUX.1-dev's guidance) and not for SD1.5."""
    from tui_support import make_app, screen_text, wait_for

    from tui_trainer.config import dump_config, load_preset
    from tui_trainer.tui.screens.editor import EditorScreen

    for preset, shown in (("qwen-image-lora", True), ("sd15-lora", False)):
        path = tmp_path / f"{preset}.toml"
        path.write_text(dump_config(load_preset(preset)))
        app = make_app(tmp_path, path)
        async with app.run_test(size=(120, 200)) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, EditorScreen) and app.focused is not None
                           and app.screen.current.built)
            screen = app.screen
            await screen.show_section("training", focus=True)
            await wait_for(pilot, lambda: screen.current.SECTION == "training" and screen.current.built)
            await pilot.pause()
            text = screen_text(app)
            assert ("Timestep sampling" in text) is shown and ("Max sequence length" in text) is shown, preset
            assert "Guidance" not in text


def test_samples_pass_cfg_as_true_cfg_scale():
    """sample.cfg reaches QwenImagePipeline as true_cfg_scale (its guidance_scale is for distilled models only)."""
    import torch
    from PIL import Image

    from tui_trainer.config.schema import SampleConfig
    from tui_trainer.train.families import train_family
    from tui_trainer.train.sampling import generate, prompt_inputs

    calls = []

    class Pipeline:
        def __call__(self, **kwargs):
            calls.append(kwargs)
            return type("Output", (), {"images": [Image.new("RGB", (64, 64))]})()

    family = train_family(Family.QWEN_IMAGE)
    sample = SampleConfig(prompt=PROMPT, cfg=4.5)
    generate(Pipeline(), sample, (64, 64), torch.device("cpu"), prompt_inputs(sample, lambda texts: texts), None,
             family.sample_inputs, family.cfg_argument)
    assert calls[0]["true_cfg_scale"] == 4.5 and "guidance_scale" not in calls[0]
    assert calls[0]["negative_prompt"] == ""  # not None: the pipeline runs true CFG when cfg > 1

"""The family registry's numbers equal those of the real architectures built on torch's meta device."""

from __future__ import annotations

import subprocess
import sys

import pytest
from tui_trainer.models.architectures import (
    CHROMA1,
    CLIP_L,
    FLUX1_DEV,
    FLUX1_SCHNELL,
    FLUX_VAE,
    LORA_PER_RANK_ATTENTION,
    LORA_PER_RANK_KOHYA_FULL,
    OPEN_CLIP_BIG_G,
    OPEN_CLIP_H,
    PIXART_ALPHA_1024,
    QWEN2_5_VL_7B,
    QWEN_IMAGE,
    QWEN_IMAGE_VAE,
    REFERENCE_COUNTS,
    SD15_UNET,
    SD21_UNET,
    SD_VAE,
    SDXL_UNET,
    STABLE_CASCADE_C,
    STABLE_CASCADE_C_LITE,
    T5_V1_1_XXL,
)
from tui_trainer.models.architectures import QWEN3_4B, Z_IMAGE_TURBO

from tui_trainer.config.enums import Family, LoraTargets, LoraType, PredictionType
from tui_trainer.models.families import FAMILIES, VARIANTS, factorization, family_spec, spec_for_model

LITE = VARIANTS[(Family.STABLE_CASCADE, "lite")]


def _clip(config: dict, with_projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(CLIPTextConfig(**config))


def _diffusers(name: str, config: dict):
    import diffusers

    return getattr(diffusers, name)(**config)


def _t5():
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(**T5_V1_1_XXL))


BUILDERS = {
    "sd15.unet": (FAMILIES[Family.SD15], "unet", lambda: _diffusers("UNet2DConditionModel", SD15_UNET)),
    "sd15.text_encoder": (FAMILIES[Family.SD15], "text_encoder", lambda: _clip(CLIP_L)),
    "sd15.vae": (FAMILIES[Family.SD15], "vae", lambda: _diffusers("AutoencoderKL", SD_VAE)),
    "sd2.unet": (FAMILIES[Family.SD2], "unet", lambda: _diffusers("UNet2DConditionModel", SD21_UNET)),
    "sd2.text_encoder": (FAMILIES[Family.SD2], "text_encoder", lambda: _clip(OPEN_CLIP_H)),
    "sdxl.unet": (FAMILIES[Family.SDXL], "unet", lambda: _diffusers("UNet2DConditionModel", SDXL_UNET)),
    "sdxl.text_encoder": (FAMILIES[Family.SDXL], "text_encoder", lambda: _clip(CLIP_L)),
    "sdxl.text_encoder_2": (FAMILIES[Family.SDXL], "text_encoder_2", lambda: _clip(OPEN_CLIP_BIG_G, True)),
    "pixart_alpha.transformer": (FAMILIES[Family.PIXART_ALPHA], "transformer",
                                 lambda: _diffusers("PixArtTransformer2DModel", PIXART_ALPHA_1024)),
    "pixart_alpha.text_encoder": (FAMILIES[Family.PIXART_ALPHA], "text_encoder", _t5),
    "stable_cascade.prior": (FAMILIES[Family.STABLE_CASCADE], "prior",
                             lambda: _diffusers("StableCascadeUNet", STABLE_CASCADE_C)),
    "stable_cascade.text_encoder": (FAMILIES[Family.STABLE_CASCADE], "text_encoder", lambda: _clip(OPEN_CLIP_BIG_G, True)),
    "stable_cascade-lite.prior": (LITE, "prior", lambda: _diffusers("StableCascadeUNet", STABLE_CASCADE_C_LITE)),
    "flux1_dev.transformer": (FAMILIES[Family.FLUX1_DEV], "transformer", lambda: _diffusers("FluxTransformer2DModel", FLUX1_DEV)),
    "flux1_dev.text_encoder": (FAMILIES[Family.FLUX1_DEV], "text_encoder", lambda: _clip(CLIP_L)),
    "flux1_dev.text_encoder_2": (FAMILIES[Family.FLUX1_DEV], "text_encoder_2", _t5),
    "flux1_dev.vae": (FAMILIES[Family.FLUX1_DEV], "vae", lambda: _diffusers("AutoencoderKL", FLUX_VAE)),
    "flux1_schnell.transformer": (FAMILIES[Family.FLUX1_SCHNELL], "transformer",
                                  lambda: _diffusers("FluxTransformer2DModel", FLUX1_SCHNELL)),
    "chroma.transformer": (FAMILIES[Family.CHROMA], "transformer", lambda: _diffusers("ChromaTransformer2DModel", CHROMA1)),
    "chroma.text_encoder": (FAMILIES[Family.CHROMA], "text_encoder", _t5),
}
BUILDERS.update({
    "z_image.transformer": (FAMILIES[Family.Z_IMAGE], "transformer", lambda: _diffusers("ZImageTransformer2DModel", Z_IMAGE_TURBO)),
    "z_image.text_encoder": (FAMILIES[Family.Z_IMAGE], "text_encoder", lambda: _qwen3(QWEN3_4B)),
    "z_image.vae": (FAMILIES[Family.Z_IMAGE], "vae", lambda: _diffusers("AutoencoderKL", FLUX_VAE)),
})


def _qwen3(config: dict):
    from transformers import Qwen3Config, Qwen3Model

    return Qwen3Model(Qwen3Config(**config))


def _qwen2_5_vl():
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    return Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**QWEN2_5_VL_7B))


BUILDERS.update({
    "qwen_image.transformer": (FAMILIES[Family.QWEN_IMAGE], "transformer",
                               lambda: _diffusers("QwenImageTransformer2DModel", QWEN_IMAGE)),
    "qwen_image.text_encoder": (FAMILIES[Family.QWEN_IMAGE], "text_encoder", _qwen2_5_vl),
    "qwen_image.vae": (FAMILIES[Family.QWEN_IMAGE], "vae", lambda: _diffusers("AutoencoderKLQwenImage", QWEN_IMAGE_VAE)),
})


def _on_meta(build):
    import torch

    with torch.device("meta"):
        return build()


@pytest.mark.parametrize("key", list(BUILDERS))
def test_registry_counts_equal_meta_device_builds(key):
    """Every count and adapter layer shape of a part equals the real architecture's."""
    from tui_trainer.train.counting import measured_part

    spec, name, build = BUILDERS[key]
    part = spec.parts[name]
    measured = measured_part(part, _on_meta(build))
    assert part.verified
    assert part.params == measured.params
    assert (part.small_tensor_params, part.factored_state_elements, part.linear_weight_params) == (
        measured.small_tensor_params, measured.factored_state_elements, measured.linear_weight_params)
    assert part.lora_layers == measured.lora_layers
    if key in REFERENCE_COUNTS:
        assert part.params == REFERENCE_COUNTS[key]


def test_lora_per_rank_equals_reference_numbers():
    for key, per_rank in LORA_PER_RANK_KOHYA_FULL.items():
        spec, name, _ = BUILDERS[key]
        assert spec.parts[name].lora_params_per_rank(LoraTargets.FULL) == per_rank, key
    for key, per_rank in LORA_PER_RANK_ATTENTION.items():
        spec, name, _ = BUILDERS[key]
        assert spec.parts[name].lora_params_per_rank(LoraTargets.ATTENTION) == per_rank, key
    assert FAMILIES[Family.SD15].parts["unet"].lora_params_per_rank(LoraTargets.ATTENTION_MLP) == 374_016


@pytest.mark.parametrize("key", ["sd15.unet", "sd15.text_encoder", "sdxl.text_encoder_2", "pixart_alpha.transformer",
                                 "flux1_dev.transformer", "chroma.transformer", "z_image.transformer", "qwen_image.transformer"])
@pytest.mark.parametrize("targets", list(LoraTargets))
def test_peft_lora_with_the_registry_target_names_has_the_registry_size(key, targets):
    """peft, given the registry's target names, adds exactly rank x per-rank parameters."""
    from peft import LoraConfig, inject_adapter_in_model

    spec, name, build = BUILDERS[key]
    part = spec.parts[name]
    model = _on_meta(build)
    inject_adapter_in_model(LoraConfig(r=4, target_modules=list(spec.lora_target_modules[targets][name])), model)
    added = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert added == 4 * part.lora_params_per_rank(targets)


@pytest.mark.parametrize("lora_type", [LoraType.LOHA, LoraType.LOKR])
@pytest.mark.parametrize("rank", [2, 8, 64])
def test_loha_and_lokr_tensor_sizes_match_peft(lora_type, rank):
    """The registry's LoHa / LoKr tensor model counts what peft builds (SD1.5 UNet, attention+mlp)."""
    import peft

    spec, name, build = BUILDERS["sd15.unet"]
    config_class = {LoraType.LOHA: peft.LoHaConfig, LoraType.LOKR: peft.LoKrConfig}[lora_type]
    targets = LoraTargets.ATTENTION_MLP
    model = _on_meta(build)
    peft.inject_adapter_in_model(config_class(r=rank, target_modules=list(spec.lora_target_modules[targets][name])), model)
    added = sum(p.numel() for n, p in model.named_parameters() if "hada_" in n or "lokr_" in n)
    assert added == sum(t.numel for t in spec.parts[name].adapter_tensors(lora_type, targets, rank))


def test_factorization_matches_peft():
    from peft.tuners.lokr.layer import factorization as peft_factorization

    for dimension in (1, 7, 32, 37, 320, 768, 1152, 1280, 2560, 4096, 10240, 6912):
        assert factorization(dimension) == peft_factorization(dimension)


def test_family_facts():
    assert [FAMILIES[f].bucket_step for f in Family] == [8, 8, 64, 16, 128, 16, 16, 16, 16, 16]
    assert [FAMILIES[f].default_resolution for f in Family] == [512, 768, 1024, 1024, 1024, 1024, 1024, 1024, 1024, 1024]
    assert FAMILIES[Family.SD2].prediction_type is PredictionType.V_PREDICTION
    assert FAMILIES[Family.SDXL].vae_scaling_factor == 0.13025
    assert FAMILIES[Family.STABLE_CASCADE].latent_pixels(1024, 1024) == 24 * 24
    assert FAMILIES[Family.SD15].latent_pixels(512, 768) == 64 * 96
    assert family_spec("sdxl") is FAMILIES[Family.SDXL]
    assert spec_for_model(Family.STABLE_CASCADE, "stabilityai/stable-cascade-prior-lite").denoiser.params == 1_030_785_040
    assert spec_for_model(Family.STABLE_CASCADE, "stabilityai/stable-cascade-prior").denoiser.params == 3_589_103_632
    assert FAMILIES[Family.STABLE_CASCADE].parts["effnet"].verified is False


def test_lora_target_modules_are_keyed_by_preset_and_part():
    sdxl = FAMILIES[Family.SDXL].lora_target_modules
    assert sdxl[LoraTargets.ATTENTION]["unet"] == ("to_q", "to_k", "to_v", "to_out.0")
    assert sdxl[LoraTargets.ATTENTION_MLP]["text_encoder_2"] == ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
    assert set(sdxl[LoraTargets.FULL]["unet"]) >= {"proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"}
    assert set(FAMILIES[Family.PIXART_ALPHA].lora_target_modules[LoraTargets.FULL]) == {"transformer"}


def test_registry_and_estimator_import_without_torch():
    code = "import sys, tui_trainer.estimate, tui_trainer.models.families; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_flux_t5_file_holds_its_token_embedding_twice():
    """FLUX.1's T5-XXL: 4,762,310,656 parameters in memory (the embedding tied), 4,893,906,944 values in its file."""
    model = _on_meta(_t5)
    assert sum(tensor.numel() for tensor in model.state_dict().values()) == 4_893_906_944
    assert FAMILIES[Family.FLUX1_DEV].parts["text_encoder_2"].params == 4_762_310_656
